"""Products with packed 4-bit weights, read as 4-bit bytes (docs/FORMAT.md §5, qtype int4).

A weight row is I/2 bytes; byte j holds column 2j in its low nibble and column 2j+1 in its high
nibble, each a 4-bit two's-complement value n (-8..7); W[o, i] = n * scale[o, i // group].

The nibbles are never sign-extended one by one: with c = byte ^ 0x88 the nibbles of c are n + 8
(0..15), so for one group
    sum_j lo_j x[2j] + hi_j x[2j+1]
  = sum_j (c_j & 15) * (x[2j] - x[2j+1]/16) + c_j * x[2j+1]/16  -  8 * sum(x over the group)
(using c_hi = (c - c_lo) / 16). The activation side (xa = x_even - x_odd/16, xb = x_odd/16 and
8 * the group sums) is prepared once per token in `prepare_q4_input`, and the row loop is then
zero-extend, and, two int->float conversions and two FMAs per byte: 16 weights from 8 bytes per
vector step. Results equal the widened int8 path up to float rounding.
"""
import numpy as np
from numba import njit, prange


@njit(fastmath=True, cache=True, nogil=True)
def prepare_q4_input(xa, xb, xsum, x):
    """x (T,I) -> xa, xb (T,I/2): x[2j] - x[2j+1]/16 and x[2j+1]/16; xsum (T,G): 8 * sum of x over
    each group of I/G inputs"""
    T, I = x.shape
    G = xsum.shape[1]
    gb = (I // 2) // G
    for t in range(T):
        for g in range(G):
            s = np.float32(0.0)
            for jj in range(gb):
                j = g * gb + jj
                e = x[t, 2 * j]
                od = x[t, 2 * j + 1]
                xb[t, j] = od * np.float32(0.0625)
                xa[t, j] = e - xb[t, j]
                s += e + od
            xsum[t, g] = np.float32(8.0) * s


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def q4_row_dot(p_row, scale_row, xa_row, xb_row, xsum_row):
    """(packed row p_row (I/2,) uint8 * scale_row (G,)) . x, with x prepared by prepare_q4_input"""
    B = p_row.shape[0]
    G = scale_row.shape[0]
    gb = B // G
    acc = np.float32(0.0)
    for g in range(G):
        # constant trip counts for groups of 32 and 64 weights, so that LLVM unrolls them whole
        if gb == 16:
            a = _q4_group(p_row, xa_row, xb_row, g * 16, 16)
        elif gb == 32:
            a = _q4_group(p_row, xa_row, xb_row, g * 32, 32)
        else:
            a = _q4_group(p_row, xa_row, xb_row, g * gb, gb)
        acc += (a - xsum_row[g]) * scale_row[g]
    return acc


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _q4_group(p_row, xa_row, xb_row, b, n):
    """sum over bytes b..b+n of (c & 15) * xa + c * xb, c = byte ^ 0x88 (see the module docstring)"""
    a = np.float32(0.0)
    for jj in range(n):
        c = p_row[b + jj] ^ np.uint8(0x88)
        a += np.float32(c & np.uint8(15)) * xa_row[b + jj] + np.float32(c) * xb_row[b + jj]
    return a


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def matmul_q4(y, p, scale, xa, xb, xsum):
    """(p (O,I/2) packed 4-bit * scale (O,G)) @ x (T,I)^T -> y (T,O); x given as prepare_q4_input
    made it. Each packed row is read once for all T tokens."""
    for o in prange(p.shape[0]):
        for t in range(xa.shape[0]):
            y[t, o] = q4_row_dot(p[o], scale[o], xa[t], xb[t], xsum[t])


def matmul_q4_f32(p: np.ndarray, scale: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Convenience: (p (O,I/2) * scale (O,G)) @ x (T,I)^T -> new (T,O) float32 (allocates)."""
    T, I = x.shape
    G = scale.shape[1]
    xa = np.empty((T, I // 2), np.float32)
    xb = np.empty((T, I // 2), np.float32)
    xsum = np.empty((T, G), np.float32)
    prepare_q4_input(xa, xb, xsum, np.ascontiguousarray(x, dtype=np.float32))
    y = np.empty((T, p.shape[0]), np.float32)
    matmul_q4(y, p, scale, xa, xb, xsum)
    return y
