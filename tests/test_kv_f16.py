"""KV caches in f16 (-ctk f16 -ctv f16): the conversions, every attention path, the API and the budget."""
import numpy as np
import pytest
from numba import njit

from test_kernels_layer import IDS, random_weights
from tinyqmoe.errors import UsageError
from tinyqmoe.kernels.attention import attention, attention_blas
from tinyqmoe.kernels.decode import FusedDecode
from tinyqmoe.kernels.half import from_f32, has_f16c, kernel_view, to_f32
from tinyqmoe.model.forward import forward
from tinyqmoe.model.state import RunState

pytestmark = pytest.mark.skipif(not has_f16c(), reason="f16 caches need F16C")


@njit(cache=True)
def _round_trip(src, half, back):
    for i in range(src.shape[0]):
        half[i] = from_f32(src[i], half)
        back[i] = to_f32(half[i])


def test_conversions_equal_numpy_float16():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000).astype(np.float32) * s for s in (1e-7, 1e-3, 1, 1e3, 7e4)]
                       + [np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65520, 2.0 ** -24, 2.0 ** -26],
                                   np.float32)])
    half, back = np.empty(x.shape, np.uint16), np.empty(x.shape, np.float32)
    _round_trip(x, half, back)
    with np.errstate(over="ignore"):
        expect = x.astype(np.float16)
    np.testing.assert_array_equal(half, expect.view(np.uint16))          # round to nearest, ties to even
    np.testing.assert_array_equal(back, expect.astype(np.float32))       # read back exactly


def test_attention_kernels_read_f16_caches_exactly():
    rng = np.random.default_rng(1)
    T, H, K, S, E, pos0 = 5, 4, 2, 12, 16, 3
    q = rng.standard_normal((T, H, E)).astype(np.float32)
    k16 = rng.standard_normal((K, S, E)).astype(np.float16)
    v16 = rng.standard_normal((K, S, E)).astype(np.float16)
    out16, out32, blas = (np.empty((T, H, E), np.float32) for _ in range(3))
    attention(out16, q, kernel_view(k16), kernel_view(v16), pos0)
    attention(out32, q, k16.astype(np.float32), v16.astype(np.float32), pos0)
    attention_blas(blas, q, k16, v16, pos0)
    np.testing.assert_array_equal(out16, out32)   # the same float32 values, the same arithmetic
    np.testing.assert_allclose(blas, out32, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ctk, ctv", [("f16", "f16"), ("f32", "f16")])
def test_fused_decode_with_f16_caches_equals_forward(ctk, ctv):
    cfg, w = random_weights(32, True)
    fused = FusedDecode(w, cfg)
    s_ref, s_fast = RunState(cfg, len(IDS), ctk, ctv), RunState(cfg, len(IDS), ctk, ctv)
    assert s_fast.k.dtype == (np.float16 if ctk == "f16" else np.float32) and s_fast.v.dtype == np.float16
    for token in IDS:
        ref = forward(w, s_ref, [token])
        fast = fused.step(s_fast, [token])
        np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # the paths' float32 keys and values differ in the last bits, so their f16 roundings may differ by
    # one f16 step (2^-10 relative) where a value lies near a rounding boundary
    for fast_cache, ref_cache in ((s_fast.k, s_ref.k), (s_fast.v, s_ref.v)):
        if fast_cache.dtype == np.float16:
            assert np.mean(fast_cache == ref_cache) > 0.99
        np.testing.assert_allclose(fast_cache.astype(np.float32), ref_cache.astype(np.float32), rtol=2e-3, atol=1e-4)


def test_f16_caches_stay_close_to_f32_and_halve_the_memory():
    cfg, w = random_weights(None, False, seed=2)
    s32, s16 = RunState(cfg, 64), RunState(cfg, 64, "f16", "f16")
    assert s16.nbytes * 2 == s32.nbytes
    a = forward(w, s32, IDS, all_logits=True)      # a prompt of 20 rows: the BLAS attention path
    b = forward(w, s16, IDS, all_logits=True)
    assert np.abs(a - b).max() < 2e-2 * np.abs(a).max()
    # layer 0's keys and values come from the same numbers (later layers see f16 attention before them)
    np.testing.assert_array_equal(s16.k[0], s32.k[0].astype(np.float16))
    np.testing.assert_array_equal(s16.v[0], s32.v[0].astype(np.float16))
    f = s16.fork()
    assert f.k.dtype == np.float16 and f.pos == s16.pos and np.array_equal(f.v, s16.v)


def test_cache_types_are_checked():
    cfg, _ = random_weights(None, False)
    with pytest.raises(UsageError, match="unknown key cache type 'q8_0'"):
        RunState(cfg, 8, "q8_0", "f32")
    with pytest.raises(UsageError, match="value cache type"):
        RunState(cfg, 8, "f32", "bf16")
