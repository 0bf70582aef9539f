"""Normalisation, activation and positional kernels."""
import numpy as np
from numba import njit, prange
from tinyqmoe.kernels.fastexp import exp_f32


@njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def rmsnorm(out, x, w, eps):
    """x (T,D), w (D,) -> out (T,D) = x / rms(x) * w"""
    T, D = x.shape
    for t in range(T):
        ss = np.float32(0.0)
        for i in range(D):
            ss += x[t, i] * x[t, i]
        inv = np.float32(1.0) / np.sqrt(ss / D + np.float32(eps))
        for i in range(D):
            out[t, i] = x[t, i] * inv * w[i]


@njit(fastmath=True, cache=True, nogil=True, error_model="numpy", inline="always")
def _silu_mul_row(out, gate_up, t):
    F = out.shape[1]
    for i in range(F):
        g = gate_up[t, i]
        out[t, i] = g / (np.float32(1.0) + exp_f32(-g)) * gate_up[t, F + i]


@njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def silu_mul(out, gate_up):
    """gate_up (T,2F) = [gate | up] -> out (T,F) = silu(gate) * up"""
    for t in range(gate_up.shape[0]):
        _silu_mul_row(out, gate_up, t)


@njit(parallel=True, fastmath=True, cache=True, nogil=True, error_model="numpy")
def silu_mul_rows(out, gate_up):
    """silu_mul with the rows in parallel, for prompts (the scalar exp costs ~7 ns an element: a
    128-token prefill's SiLU took as long as its attention on one thread)"""
    for t in prange(gate_up.shape[0]):
        _silu_mul_row(out, gate_up, t)


@njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def rope_rotate_half(x, cos, sin):
    """in place: x (T,N,E), cos/sin (T,E/2): (x1, x2) -> (x1 c - x2 s, x2 c + x1 s), halves of E"""
    T, N, E = x.shape
    h = E // 2
    for t in range(T):
        for n in range(N):
            for i in range(h):
                a = x[t, n, i]
                b = x[t, n, h + i]
                x[t, n, i] = a * cos[t, i] - b * sin[t, i]
                x[t, n, h + i] = b * cos[t, i] + a * sin[t, i]
