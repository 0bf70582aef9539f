"""Products with packed 4-bit weights, read as 4-bit bytes (docs/FORMAT.md §5, qtype int4; uint4's
unsigned fields with offsets run in kernels/rowdot.py, int8 activations, for any number of tokens).

A weight row is I/2 bytes; byte j holds column 2j in its low nibble and column 2j+1 in its high
nibble, each a 4-bit two's-complement value n (-8..7); W[o, i] = n * scale[o, i // group].
Contract of every kernel here: results equal the same weights widened to int8 (kernels.matvec)
up to float rounding.

The nibbles are never sign-extended one by one: with c = byte ^ 0x88 the nibbles of c are n + 8
(0..15), so for one group
    sum_j lo_j x[2j] + hi_j x[2j+1]
  = sum_j (c_j & 15) * (x[2j] - x[2j+1]/16) + c_j * x[2j+1]/16  -  8 * sum(x over the group)
(using c_hi = (c - c_lo) / 16). The activation side (xa = x_even - x_odd/16, xb = x_odd/16 and
8 * the group sums) is prepared once per token in `prepare_q4_input`, and the row loop is then
xor, and, zero-extend, two int->float conversions and two FMAs per 8 bytes (16 weights).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic


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


@intrinsic
def nibbles_f32(typingctx, byte):
    """uint8 byte -> (float32((byte ^ 0x88) & 15), float32(byte ^ 0x88)), integer steps in 8 bits
    (numba would widen them to 64 bits, and 64-bit integers do not convert to float in vectors)"""
    def codegen(context, builder, signature, args):
        i8, f32 = ir.IntType(8), ir.FloatType()
        c = builder.xor(args[0], ir.Constant(i8, 0x88))
        lo = builder.and_(c, ir.Constant(i8, 15))
        return context.make_tuple(builder, signature.return_type,
                                  [builder.uitofp(lo, f32), builder.uitofp(c, f32)])
    return types.UniTuple(types.float32, 2)(types.uint8), codegen


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def q4_row_dot(p_row, scale_row, xa_row, xb_row, xsum_row, scale_bytes):
    """(packed row p_row (I/2,) uint8 * scale_row (G,)) . x, x prepared by prepare_q4_input;
    scale_bytes (I/2,) f32 is scratch"""
    B = p_row.shape[0]
    G = scale_row.shape[0]
    gb = B // G
    if gb < 32:
        # groups of 32 weights (16 bytes) are shorter than LLVM's vector loop (32 bytes a step):
        # expand the scales to one per byte and run one loop over the whole row instead
        corr = np.float32(0.0)
        for g in range(G):
            corr += scale_row[g] * xsum_row[g]
            for jj in range(gb):
                scale_bytes[g * gb + jj] = scale_row[g]
        acc = np.float32(0.0)
        for j in range(B):
            lo, c = nibbles_f32(p_row[j])
            acc += scale_bytes[j] * (lo * xa_row[j] + c * xb_row[j])
        return acc - corr
    acc = np.float32(0.0)
    for g in range(G):
        if gb == 32:   # groups of 64 weights: a constant trip count
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
        lo, c = nibbles_f32(p_row[b + jj])
        a += lo * xa_row[b + jj] + c * xb_row[b + jj]
    return a


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def matmul_q4(y, p, scale, xa, xb, xsum):
    """(p (O,I/2) packed 4-bit * scale (O,G)) @ x (T,I)^T -> y (T,O); x given as prepare_q4_input
    made it. Each packed row is read once for all T tokens."""
    O, B = p.shape
    R = 64   # rows per task, one scratch row per task
    for blk in prange((O + R - 1) // R):
        scale_bytes = np.empty(B, np.float32)
        for o in range(blk * R, min(O, blk * R + R)):
            for t in range(xa.shape[0]):
                y[t, o] = q4_row_dot(p[o], scale[o], xa[t], xb[t], xsum[t], scale_bytes)


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


@njit(fastmath=True, cache=True, nogil=True)
def dequant_rows_q4(w, p, scale, row0):
    """rows row0 .. row0+R of (p (O,I/2) packed 4-bit * scale (O,G)) -> w (R,I) f32 (long prompts' BLAS blocks)"""
    R, I = w.shape
    gs = I // scale.shape[1]
    for r in range(R):
        for j in range(I // 2):
            b = np.int32(p[row0 + r, j])
            lo = (b & 15) - ((b & 8) << 1)           # the low nibble, sign-extended
            hi = (b >> 4) - ((b & 128) >> 3)          # the high nibble, sign-extended
            s = scale[row0 + r, (2 * j) // gs]
            w[r, 2 * j] = np.float32(lo) * s
            w[r, 2 * j + 1] = np.float32(hi) * s
