"""kernels/fastexp.exp_f32 against float64 exp: accuracy over the whole float32 range, the ends, and the
same bits vectorized or alone."""
import numpy as np
from numba import njit

from tinyqmoe.kernels.fastexp import HIGH, LOW, exp_f32


@njit(fastmath=True, cache=True)
def _exp_loop(out, x):          # LLVM vectorizes this loop
    for i in range(x.shape[0]):
        out[i] = exp_f32(x[i])


@njit(cache=True)
def _exp_one(v):
    return exp_f32(v)


def test_within_one_ulp_of_float64_exp():
    x = (np.arange(int(LOW * 64), int(HIGH * 64) + 1) / 64).astype(np.float32)
    x = np.concatenate([x, np.float32(np.pi) * np.arange(-27, 28, dtype=np.float32)])
    x = x[(x > LOW) & (x < HIGH)]
    got = np.empty_like(x)
    _exp_loop(got, x)
    want = np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) < 1.0
    assert (got[x == 0] == 1.0).all()


def test_ends_and_special_values():
    x = np.array([-np.inf, -1000, LOW - 0.01, HIGH + 0.01, 1000, np.inf, np.nan], np.float32)
    got = np.empty_like(x)
    _exp_loop(got, x)
    np.testing.assert_array_equal(got[:3], 0.0)
    assert np.isposinf(got[3:6]).all() and np.isnan(got[6])
    near = np.array([88.7, -87.3], np.float32)    # largest / smallest n: 2^128 and 2^-126 built in two factors
    _exp_loop(got[:2], near)
    np.testing.assert_allclose(got[:2], np.exp(near.astype(np.float64)), rtol=2e-7)


def test_vector_lanes_equal_scalar_calls():
    x = np.random.default_rng(0).uniform(-90, 90, 1003).astype(np.float32)
    vec = np.empty_like(x)
    _exp_loop(vec, x)
    np.testing.assert_array_equal(vec, np.array([_exp_one(v) for v in x], np.float32))
