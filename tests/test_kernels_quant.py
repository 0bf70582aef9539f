"""int8 x int8 GEMM and packed 4-bit products against their numpy references."""
import numpy as np
import pytest

from tinyqmoe.compress.quant import pack_bits, quantize_int4, unpack_bits
from tinyqmoe.kernels import reference as ref
from tinyqmoe.kernels.gemm_i8 import HAS_AVX2, gemm_q8q8, gemm_q8q8_avx2, linear_q8q8, quantize_rows_i8
from tinyqmoe.kernels.matvec import matmul_q8
from tinyqmoe.kernels.matvec_q4 import matmul_q4_f32

rng = np.random.default_rng(0)


@pytest.mark.parametrize("T, G, GX", [(1, 1, 1), (7, 1, 4), (16, 2, 2), (16, 2, 4), (33, 4, 4)])
def test_quantize_rows_and_gemm_q8q8(T, G, GX):
    """G weight groups, GX activation blocks (I/GX = 32 is what linear_q8q8 uses)."""
    O, I = 39, 128                                  # O not a multiple of the 4-row tile, T odd
    x = rng.standard_normal((T, I)).astype(np.float32)
    x[-1, : I // GX] = 0.0                          # an all-zero block (the whole row when T = GX = 1)
    xq = np.empty((T, I), np.int8)
    xs = np.empty((T, GX), np.float32)
    quantize_rows_i8(xq, xs, x)
    rq, rs = ref.quantize_rows_i8(x, GX)
    np.testing.assert_allclose(xs, rs, rtol=1e-6)
    assert np.abs(xq.astype(int) - rq).max() <= 1   # x / s at a rounding tie may round either way
    assert np.abs(xq[0, -(I // GX):]).max() == 127 or T == GX == 1
    assert not xq[-1, : I // GX].any()
    wq = rng.integers(-127, 128, (O, I)).astype(np.int8)
    ws = rng.random((O, G)).astype(np.float32)
    expect = ref.gemm_q8q8(wq, ws, xq, xs)
    kernels = [gemm_q8q8] + ([gemm_q8q8_avx2] if HAS_AVX2 and I // GX == 32 else [])
    for kernel in kernels:
        for block_rows in (8, 13, O):
            y = np.full((T, O), np.nan, np.float32)
            kernel(y, wq, ws, xq, xs, block_rows)
            np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5 * np.abs(expect).max())
    if I // GX == 32:
        np.testing.assert_allclose(linear_q8q8(x, wq, ws, 1024), expect, rtol=1e-5,
                                   atol=1e-5 * np.abs(expect).max())


def test_gemm_q8q8_int32_sums_exact():
    """At the largest magnitudes the int32 sums are exact (no 16-bit saturation anywhere)."""
    O, I, T = 8, 1536, 4
    wq = np.full((O, I), 127, np.int8)
    wq[1::2] = -127
    xq = np.full((T, I), -127, np.int8)
    ones = np.ones((O, 1), np.float32)
    for kernel, GX in [(gemm_q8q8, 1)] + ([(gemm_q8q8_avx2, I // 32)] if HAS_AVX2 else []):
        y = np.empty((T, O), np.float32)
        kernel(y, wq, ones, xq, np.ones((T, GX), np.float32), O)
        assert y[0, 0] == -127 * 127 * I and y[0, 1] == 127 * 127 * I


@pytest.mark.parametrize("group", [32, 64, 96, None])
@pytest.mark.parametrize("T", [1, 5])
def test_matmul_q4_equals_widened_int8(group, T):
    O, I = 45, 192
    w = rng.standard_normal((O, I)).astype(np.float32)
    qt, _ = quantize_int4(w, group)
    x = rng.standard_normal((T, I)).astype(np.float32)
    y = matmul_q4_f32(qt.q, qt.scale, x)
    widened = np.empty((T, O), np.float32)
    matmul_q8(widened, unpack_bits(qt.q, 4), qt.scale, x)
    np.testing.assert_allclose(y, widened, rtol=1e-5, atol=1e-5 * np.abs(widened).max())
    np.testing.assert_allclose(y, ref.matmul_q4(qt.q, qt.scale, x), rtol=1e-5, atol=1e-5 * np.abs(widened).max())


def test_q4_every_nibble_value():
    """All 16 nibble values (-8 is never written, a reader may accept it) in both halves of a byte."""
    vals = np.arange(-8, 8, dtype=np.int8)
    q = np.stack([np.roll(vals, k) for k in range(16)] * 2)            # (32, 16): every value, every column
    q = np.concatenate([q, q[:, ::-1]], axis=1)                         # (32, 32)
    p = pack_bits(q, 4)
    assert np.array_equal(ref.unpack_q4(p), q)
    scale = rng.random((32, 1)).astype(np.float32)
    x = rng.standard_normal((2, 32)).astype(np.float32)
    expect = ref.matmul_q8(q, scale, x)
    np.testing.assert_allclose(matmul_q4_f32(p, scale, x), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [32, 64])
def test_dequant_rows_q4_equals_widened(group):
    """The long-prompt path's dequantization of packed 4-bit rows: the widened values times their scales."""
    from tinyqmoe.compress.quant import quantize, unpack_bits
    from tinyqmoe.kernels.matvec_q4 import dequant_rows_q4

    w = np.random.default_rng(3).standard_normal((24, 128)).astype(np.float32)
    qt, _ = quantize(w, 4, group)
    out = np.empty((10, 128), np.float32)
    dequant_rows_q4(out, np.ascontiguousarray(qt.q), np.ascontiguousarray(qt.scale, np.float32), 7)
    want = unpack_bits(qt.q, 4)[7:17].astype(np.float32) * np.repeat(qt.scale[7:17], group, axis=1)
    np.testing.assert_array_equal(out, want)
