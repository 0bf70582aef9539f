"""int8 x int8 GEMM and packed 4-bit products against their numpy references."""
import numpy as np
import pytest

from tinyqmoe.compress.quant import pack_bits, quantize_int4, unpack_bits
from tinyqmoe.kernels import reference as ref
from tinyqmoe.kernels.gemm_i8 import (ACT_BLOCK, HAS_AVX2, gemm_panel, linear_packed, linear_q8q8, pack_activations,
                                      panel_fits)
from tinyqmoe.kernels.matvec import matmul_q8
from tinyqmoe.kernels.matvec_q4 import matmul_q4_f32

rng = np.random.default_rng(0)


needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="the int8 GEMM is AVX2 vector code")


@needs_avx2
@pytest.mark.parametrize("T, G", [(1, 1), (7, 1), (16, 2), (33, 4), (17, 1)])
def test_linear_q8q8_against_numpy(T, G):
    """Activations quantized per token and 32 inputs as the numpy reference does, then int32 sums: T
    with a partial last token vector, O not a multiple of the 6-row tile, weight groups of 1-4 blocks."""
    O, I = 39, 128
    x = rng.standard_normal((T, I)).astype(np.float32)
    x[-1, :ACT_BLOCK] = 0.0                          # an all-zero block
    xq, xs = ref.quantize_rows_i8(x, I // ACT_BLOCK)
    wq = rng.integers(-127, 128, (O, I)).astype(np.int8)
    ws = rng.random((O, G)).astype(np.float32)
    expect = ref.gemm_q8q8(wq, ws, xq, xs)
    for block_bytes in (1024, 3000, 1 << 16):        # row blocks of 6, 12 and all rows
        np.testing.assert_allclose(linear_q8q8(x, wq, ws, block_bytes), expect, rtol=1e-5,
                                   atol=1e-5 * np.abs(expect).max())


@needs_avx2
def test_pack_activations_is_the_reference_quantization_in_panel_order():
    T, I = 13, 96                                   # two token vectors, the second with 3 padding lanes
    x = rng.standard_normal((T, I)).astype(np.float32)
    x[4, 32:64] = 0.0
    xq, xs = ref.quantize_rows_i8(x, I // ACT_BLOCK)
    xp, xsp, xb = pack_activations(x)
    assert xp.shape == (2, I // 2, 8, 2) and xsp.shape == (2, I // ACT_BLOCK, 8)
    unpacked = xp.transpose(0, 2, 1, 3).reshape(16, I)            # [token, input]
    assert np.abs(unpacked[:T] - xq).max() <= 1     # x / s at a rounding tie may round either way
    assert np.abs(unpacked[0, :ACT_BLOCK]).max() == 127 and not unpacked[4, 32:64].any()
    scales = xsp.transpose(0, 2, 1).reshape(16, -1)
    np.testing.assert_allclose(scales[:T], xs, rtol=1e-6)
    assert not unpacked[T:].any() and (scales[T:] == 1).all()


@needs_avx2
def test_panel_rows_independent_of_the_batch():
    """A token's outputs are the same bits whichever rows share its call (lane, vector, T): the blocks are
    summed in one order for every lane. Prefill in pieces and eval rely on it."""
    O, I = 30, 192
    wq = rng.integers(-127, 128, (O, I)).astype(np.int8)
    ws = rng.random((O, 2)).astype(np.float32)
    x = rng.standard_normal((37, I)).astype(np.float32)
    full = linear_q8q8(x, wq, ws)
    for rows in (slice(0, 1), slice(5, 22), slice(36, 37), slice(8, 24)):
        np.testing.assert_array_equal(linear_q8q8(x[rows], wq, ws), full[rows])


def dequantized_activations(x):
    """The values the int8 panel multiplies: x quantized per token and block (pack_activations), as f64."""
    T, I = x.shape
    xp, xsp, xb = pack_activations(x)
    xq = xp.transpose(0, 2, 1, 3).reshape(-1, I)[:T].astype(np.float64)
    xs = xsp.transpose(0, 2, 1).reshape(-1, I // ACT_BLOCK)[:T].astype(np.float64)
    sums = xb.transpose(0, 2, 1).reshape(-1, I // ACT_BLOCK)[:T]
    np.testing.assert_allclose(sums, (xq.reshape(T, -1, ACT_BLOCK).sum(axis=2) * xs), rtol=1e-6)
    return (xq.reshape(T, -1, ACT_BLOCK) * xs[:, :, None]).reshape(T, I)


@needs_avx2
@pytest.mark.parametrize("unsigned", [True, False])
@pytest.mark.parametrize("T,group", [(37, 32), (5, 64), (16, 96)])
def test_linear_packed_is_4bit_weights_times_int8_activations(unsigned, T, group):
    """Packed 4-bit rows (FORMAT §5 nibbles; uint4 with offsets: w = value * scale + offset) times the
    int8 activations: the exact product of those values within float rounding, whatever the group (one
    or more activation blocks), every token the same bits alone or in any batch."""
    O, I = 31, 192
    G = I // group
    p = rng.integers(0, 256, (O, I // 2)).astype(np.uint8)
    scale = rng.random((O, G)).astype(np.float32)
    offset = rng.standard_normal((O, G)).astype(np.float32)
    ks = np.ascontiguousarray(np.stack([scale, offset], axis=1)) if unsigned else scale
    x = rng.standard_normal((T, I)).astype(np.float32)
    w = unpack_bits(p, 4, signed=not unsigned).reshape(O, G, group) * scale[:, :, None].astype(np.float64)
    if unsigned:
        w += offset[:, :, None]
    want = dequantized_activations(x) @ w.reshape(O, I).T
    got = linear_packed(x, p, ks)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    for rows in (slice(0, 1), slice(2, T), slice(T - 1, T)):
        np.testing.assert_array_equal(linear_packed(x[rows], p, ks), got[rows])


@needs_avx2
def test_int8_gemm_int32_sums_exact():
    """At the largest magnitudes the int32 sums are exact (no 16-bit saturation anywhere)."""
    O, I, T = 8, 1536, 4
    wq = np.full((O, I), 127, np.int8)
    wq[1::2] = -127
    xp, xsp, _ = pack_activations(np.full((T, I), -1.0, np.float32))     # every input -127
    xsp[:] = 1.0
    y = np.empty((T, O), np.float32)
    gemm_panel(y, wq, np.ones((O, 1), np.float32), xp, xsp, T, 6)
    assert y[0, 0] == -127 * 127 * I and y[0, 1] == 127 * 127 * I


def test_panel_fits():
    assert panel_fits(576, 576) == HAS_AVX2 and panel_fits(1536, 64) == HAS_AVX2
    assert not panel_fits(576, 48) and not panel_fits(100, 100)
    with pytest.raises(ValueError, match="whole 32-input blocks"):
        linear_q8q8(np.ones((2, 48), np.float32), np.ones((3, 48), np.int8), np.ones((3, 1), np.float32))


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
