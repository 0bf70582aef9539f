"""Weight-times-activation products. Decode (T=1) and short prompts stream each weight row once
from memory and reuse it for all T tokens (the memory-bound hot loop).

Those parallelise with numba threads; long prefills leave threading to the BLAS under numpy, so the
two thread pools are never busy at once (on 2 cores, two spinning pools halve the speed).
"""
import numpy as np
from numba import njit, prange

# Up to this many rows (tokens) a product streams the weights through these kernels, one pass over
# memory; longer prefills multiply cache-sized blocks of dequantized rows with the BLAS.
SMALL_BATCH = 16


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def matmul_f32(y, w, x):
    """W (O,I) f32 @ x (T,I)^T -> y (T,O); each row of W is read once for all T tokens"""
    O, I = w.shape
    T = x.shape[0]
    for o in prange(O):
        for t in range(T):
            acc = np.float32(0.0)
            for i in range(I):
                acc += w[o, i] * x[t, i]
            y[t, o] = acc


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def q8_row_dot(q_row, scale_row, x_row):
    """(q_row (I,) int8 * scale_row (G,), one scale per I//G inputs) . x_row (I,) -> f32"""
    I = q_row.shape[0]
    G = scale_row.shape[0]
    gs = I // G
    acc = np.float32(0.0)
    for g in range(G):
        s = np.float32(0.0)
        b = g * gs
        for i in range(gs):
            s += np.float32(q_row[b + i]) * x_row[b + i]
        acc += s * scale_row[g]
    return acc


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def matmul_q8(y, q, scale, x):
    """(q (O,I) int8 * scale (O,G), one scale per I//G inputs) @ x (T,I)^T -> y (T,O)"""
    for o in prange(q.shape[0]):
        for t in range(x.shape[0]):
            y[t, o] = q8_row_dot(q[o], scale[o], x[t])


@njit(fastmath=True, cache=True, nogil=True)
def dequant_rows_q8(w, q, scale, row0):
    """rows row0 .. row0+R of (q (O,I) int8 * scale (O,G)) -> w (R,I) f32"""
    R, I = w.shape
    G = scale.shape[1]
    gs = I // G
    for r in range(R):
        for g in range(G):
            s = scale[row0 + r, g]
            b = g * gs
            for i in range(gs):
                w[r, b + i] = np.float32(q[row0 + r, b + i]) * s


@njit(fastmath=True, cache=True, nogil=True)
def matmul_q8_rows(y, q, scale, x, row0):
    """one thread: (q (R,I) int8 * scale (R,G)) @ x (T,I)^T -> y[:, row0:row0+R] of y (T,O)"""
    for r in range(q.shape[0]):
        for t in range(x.shape[0]):
            y[t, row0 + r] = q8_row_dot(q[r], scale[r], x[t])


@njit(fastmath=True, cache=True, nogil=True)
def matmul_f32_rows(y, w, x, row0):
    """one thread: w (R,I) f32 @ x (T,I)^T -> y[:, row0:row0+R] of y (T,O)"""
    for r in range(w.shape[0]):
        for t in range(x.shape[0]):
            acc = np.float32(0.0)
            for i in range(w.shape[1]):
                acc += w[r, i] * x[t, i]
            y[t, row0 + r] = acc
