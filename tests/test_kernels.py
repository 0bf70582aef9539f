"""Each numba kernel against its plain-numpy reference (tinyqmoe.kernels.reference)."""
import numpy as np
import pytest

from tinyqmoe.kernels import reference as ref
from tinyqmoe.kernels.attention import attention, attention_blas
from tinyqmoe.kernels.elementwise import rmsnorm, rope_rotate_half, silu_mul, silu_mul_rows
from tinyqmoe.runtime import Runtime
from tinyqmoe.kernels.matvec import dequant_rows_q8, matmul_f32, matmul_q8, matmul_q8_rows

rng = np.random.default_rng(0)


@pytest.mark.parametrize("T", [1, 3, 16])
@pytest.mark.parametrize("G", [1, 4])
def test_matmul_q8(T, G):
    O, I = 37, 64
    q = rng.integers(-127, 128, (O, I)).astype(np.int8)
    scale = rng.random((O, G)).astype(np.float32)
    x = rng.standard_normal((T, I)).astype(np.float32)
    y = np.empty((T, O), np.float32)
    matmul_q8(y, q, scale, x)
    np.testing.assert_allclose(y, ref.matmul_q8(q, scale, x), rtol=1e-4, atol=1e-3)
    rows = np.zeros((T, O + 3), np.float32)  # a block of rows written at an offset of a wider output
    matmul_q8_rows(rows, q, scale, x, 3)
    np.testing.assert_allclose(rows[:, 3:], y, rtol=1e-5, atol=1e-5)
    assert not rows[:, :3].any()
    w = np.empty((O - 5, I), np.float32)
    dequant_rows_q8(w, q, scale, 5)
    np.testing.assert_allclose(x @ w.T, ref.matmul_q8(q[5:], scale[5:], x), rtol=1e-4, atol=1e-3)


def test_matmul_f32():
    w = rng.standard_normal((33, 48)).astype(np.float32)
    x = rng.standard_normal((5, 48)).astype(np.float32)
    y = np.empty((5, 33), np.float32)
    matmul_f32(y, w, x)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-4, atol=1e-4)


def test_rmsnorm_silu_rope():
    x = rng.standard_normal((4, 32)).astype(np.float32)
    w = rng.random(32).astype(np.float32)
    out = np.empty_like(x)
    rmsnorm(out, x, w, 1e-5)
    np.testing.assert_allclose(out, ref.rmsnorm(x, w, 1e-5), rtol=1e-5, atol=1e-5)
    gu = rng.standard_normal((3, 20)).astype(np.float32)
    f = np.empty((3, 10), np.float32)
    silu_mul(f, gu)
    np.testing.assert_allclose(f, ref.silu_mul(gu), rtol=1e-5, atol=1e-6)
    f2 = np.empty_like(f)
    silu_mul_rows(f2, gu)
    np.testing.assert_array_equal(f2, f)
    q = rng.standard_normal((3, 2, 8)).astype(np.float32)
    ang = rng.random((3, 4)).astype(np.float32)
    expect = ref.rope_rotate_half(q, np.cos(ang), np.sin(ang))
    rope_rotate_half(q, np.cos(ang), np.sin(ang))
    np.testing.assert_allclose(q, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("T, pos0", [(1, 0), (1, 9), (5, 0), (4, 6), (70, 3)])
def test_attention_kernels_agree(T, pos0):
    H, K, E, S = 6, 2, 8, 80
    q = rng.standard_normal((T, H, E)).astype(np.float32)
    k = rng.standard_normal((K, S, E)).astype(np.float32)
    v = rng.standard_normal((K, S, E)).astype(np.float32)
    expect = ref.attention(q, k, v, pos0)
    rt = Runtime.create(2)
    try:
        for kernel in (attention, attention_blas, lambda *a: attention_blas(*a, rt)):   # T = 70: two slices
            out = np.empty_like(q)
            kernel(out, q, k, v, pos0)
            np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-5)
    finally:
        rt.close()
