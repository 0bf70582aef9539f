"""Matrix-vector products for single-token decode (the memory-bound hot loop)."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def matvec_f32(y, w, x):
    """W (O,I) f32 @ x (I,) -> y (O,)"""
    O, I = w.shape
    for o in prange(O):
        acc = np.float32(0.0)
        for i in range(I):
            acc += w[o, i] * x[i]
        y[o] = acc


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def matvec_q8(y, q, scale, x):
    """(q (O,I) int8 * scale (O,G) per group of I//G inputs) @ x (I,) -> y (O,)"""
    O, I = q.shape
    G = scale.shape[1]
    gs = I // G
    for o in prange(O):
        acc = np.float32(0.0)
        for g in range(G):
            s = np.float32(0.0)
            b = g * gs
            for i in range(gs):
                s += np.float32(q[o, b + i]) * x[b + i]
            acc += s * scale[o, g]
        y[o] = acc


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def dequant_rows_q8(w, q, scale, row0):
    """rows row0 .. row0+R of (q (O,I) int8 * scale (O,G)) -> w (R,I) f32"""
    R, I = w.shape
    G = scale.shape[1]
    gs = I // G
    for r in prange(R):
        for g in range(G):
            s = scale[row0 + r, g]
            b = g * gs
            for i in range(gs):
                w[r, b + i] = np.float32(q[row0 + r, b + i]) * s
