"""A whole Llama layer (and a whole model) in one compiled call, for decode and short prompts, over
the rows of one or several sequences.

Shape letters as in tinyqmoe.model.config: T rows (tokens; small: decode is 1 per sequence), D model
dim, H query heads, K kv heads, E head dim, Q = H*E, F ffn dim, L layers, V vocab.

Rows: row t is a token of sequence seq[t] at position pos[t]. Sequence s keeps its KV cache in two
arrays (L, K, S_s, E) at addresses k_addr[s], v_addr[s] with S_s = cap[s] positions (RunState's k and
v, kept alive by the caller for the call: kernels/decode.py), of the element type of `k_like` and
`v_like` (empty arrays that only carry it: float32, or uint16 for f16 bits, kernels/half.py). One
sequence's prompt is T rows of one seq at consecutive positions; a decode step of several sequences is
one row each.

Every linear is int8 `q` (O, I) times f32 `scale` (O, G), one scale per I//G inputs, with f32
activations; or packed 4-bit: uint4 rows (scales and offsets (O, 2, G)) multiply the layer's input
quantized to int8 per token and 32 inputs (`activations`, once per linear), int4 rows f32 activations.
Where the host has AVX-512 VNNI, rows with one scale (G = 1) multiply the input quantized to int16 per
token instead (W8A16, kernels/rowdot_a16.py: exact integer sums).
Each weight row is multiplied with up to 3 token rows at once (8 with AVX-512: kernels/rowdot.py; in
W8A16 tiles of 4 rows x 4 tokens, rows_times_tokens), in an order fixed per token: a row's results never
depend on the other rows of the call (batch invariance). A layer is five parallel regions (each one
fork/join of the numba threads), work items of ITEM rows, the small steps fused into them:
  1. qkv rows in blocks of (i, i+E/2) pairs of one head, so RoPE and the KV-cache write happen where
     the pairs are computed
  2. attention, one (row, head) per item, over positions 0..pos[t] of the row's sequence
  3. output projection rows, residual added in place
  4. gate|up rows in blocks of (i, F+i) pairs, SiLU(gate)*up where the pairs are computed
  5. down projection rows, residual added in place
The two rmsnorms (D floats per row) run on the calling thread between regions.
Like every forward-pass kernel (attention.py, elementwise.py) these use numpy's error model: activations
made non-finite by a forged file give garbage (a 0 softmax sum divides to inf), never a ZeroDivisionError.
"""
import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic, overload

from tinyqmoe.kernels.elementwise import rmsnorm
from tinyqmoe.kernels.half import from_f32, to_f32
from tinyqmoe.kernels.rowdot import (ACT, WIDE, q8_dot_1, q8_dot_2, q8_dot_3, q8_dot_4, q8_dot_8, u4a8_dot_1,
                                     u4a8_dot_2, u4a8_dot_3)
from tinyqmoe.kernels.rowdot_a16 import (A16, empty_tokens, q8a16_dot_1, q8a16_dot_2, q8a16_dot_3, q8a16_dot_4x4,
                                         quantize_a16)
from tinyqmoe.kernels.fastexp import exp_f32
from tinyqmoe.kernels.gemm_i8 import act_scale


SILU_BLOCK = 16   # gate|up rows per work item (ffn dims are multiples of 32: kernels/decode.py supports);
                  # a multiple of ROWS


@intrinsic
def _pointer(typingctx, address, like):
    """an integer address as a pointer to the element type of array `like` (for numba.carray)"""
    if not (isinstance(address, types.Integer) and isinstance(like, types.Array)):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
    return types.CPointer(like.dtype)(address, like), codegen


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def kv_cache(addr, L, K, S, E, like):
    """the (L, K, S, E) array at `addr`, of like's element type"""
    return carray(_pointer(addr, like), (L, K, S, E))


@njit(fastmath=True, cache=True, nogil=True)
def write_kv(tmp, Q, K, E, l, n_layers, k_addr, v_addr, cap, seq, pos, k_like, v_like):
    """Row t's key and value (tmp[t, Q:Q+KE], tmp[t, Q+KE:Q+2KE]) into layer l, position pos[t] of its
    sequence's caches. A function of its own, called outside the parallel regions: numba's parfor
    pass drops stores into an array made inside a region (carray) that the region never reads."""
    for t in range(tmp.shape[0]):
        sq = seq[t]
        kc = kv_cache(k_addr[sq], n_layers, K, cap[sq], E, k_like)
        vc = kv_cache(v_addr[sq], n_layers, K, cap[sq], E, v_like)
        for kh in range(K):
            for e in range(E):
                kc[l, kh, pos[t], e] = from_f32(tmp[t, Q + kh * E + e], kc)
                vc[l, kh, pos[t], e] = from_f32(tmp[t, Q + (K + kh) * E + e], vc)


@njit(fastmath=True, cache=True, nogil=True)
def quantize_u4a8(xq, xs, xo, x):
    """x (T, I) f32 -> the int8 activations uint4 rows multiply (kernels/rowdot.py u4a8_dot_R): per token
    and block of 32 inputs xs = max|x| / 127 (1 for an all-zero block) and xq = rint(x / xs) (the int8
    prefill's values, kernels/gemm_i8.py), stored in the nibbles' order (the block's even inputs, then its
    odd ones); xo = xs * sum of the block's xq (the offsets' share)."""
    T, I = x.shape
    for t in range(T):
        for b in range(I // ACT):
            i0 = b * ACT
            s = act_scale(x, t, i0)
            inv = np.float32(1.0) / s
            total = 0
            for i in range(ACT):
                v = np.int8(np.rint(x[t, i0 + i] * inv))
                xq[t, i0 + (i >> 1) + (ACT // 2) * (i & 1)] = v
                total += v
            xs[t, b] = s
            xo[t, b] = s * np.float32(total)


def activations(x, q, scale):
    """x (T, I) f32 as the row tiles of weights q, scale take it: (x, xq, xs, xo), quantized by
    quantize_u4a8 for packed uint4 weights (q uint8, scale (O, 2, G)); where the host runs W8A16
    (kernels/rowdot_a16.py A16) and the rows have one scale each (scale (O, 1)), (x, xq, xs) with x
    quantized to int16 per token by quantize_a16 (xq empty otherwise); (x,) elsewhere."""
    raise NotImplementedError("compiled code only")


@overload(activations, inline="always")
def _activations(x, q, scale):
    if q.dtype == types.uint8 and scale.ndim == 3:
        def quantized(x, q, scale):
            T, I = x.shape
            xq = np.empty((T, I), np.int8)
            xs = np.empty((T, I // ACT), np.float32)
            xo = np.empty((T, I // ACT), np.float32)
            quantize_u4a8(xq, xs, xo, x)
            return x, xq, xs, xo
        return quantized
    if A16 and scale.ndim == 2:
        def int16_tokens(x, q, scale):
            T, I = x.shape
            n = T if scale.shape[1] == 1 else 0
            xq = empty_tokens(n, I)
            xs = np.empty(n, np.float32)
            quantize_a16(xq, xs, x[:n])
            return x, xq, xs
        return int16_tokens

    return lambda x, q, scale: (x,)


def row_times_tokens(y, o, q_row, s_row, a, add):
    """y[t, o] (+)= (q_row * s_row) . token t, for every token of the activations a = (x (T, I), xq, xs, xo),
    (x, xq, xs) or (x,) (`activations` of the same weights), in tiles of up to 3 tokens (8 where WIDE; the
    sum added to y inside the tile: kernels/rowdot.py).
    q_row int8, or packed 4-bit; s_row (G,) scales, or (2, G) scales and offsets (uint4: multiplied with
    the int8 activations xq); rows with one scale times the int16 tokens xq, xs where `activations` made
    them (A16 hosts: kernels/rowdot_a16.py); the others with x."""
    raise NotImplementedError("compiled code only")


@overload(row_times_tokens, inline="always")
def _row_times_tokens(y, o, q_row, s_row, a, add):
    if q_row.dtype == types.uint8 and s_row.ndim == 2:
        def uint4_rows(y, o, q_row, s_row, a, add):
            xq, xs, xo = a[1], a[2], a[3]
            T, I = xq.shape
            gs = I // s_row.shape[-1]
            z = np.float32(0.0)
            t = 0
            while t + 3 <= T:
                b0, b1, b2 = (y[t, o], y[t + 1, o], y[t + 2, o]) if add else (z, z, z)
                y[t, o], y[t + 1, o], y[t + 2, o] = u4a8_dot_3(q_row, s_row, xq[t], xq[t + 1], xq[t + 2],
                                                               xs[t], xs[t + 1], xs[t + 2], xo[t], xo[t + 1],
                                                               xo[t + 2], b0, b1, b2, I, gs)
                t += 3
            if T - t == 2:
                b0, b1 = (y[t, o], y[t + 1, o]) if add else (z, z)
                y[t, o], y[t + 1, o] = u4a8_dot_2(q_row, s_row, xq[t], xq[t + 1], xs[t], xs[t + 1], xo[t],
                                                  xo[t + 1], b0, b1, I, gs)
            elif T - t == 1:
                (y[t, o],) = u4a8_dot_1(q_row, s_row, xq[t], xs[t], xo[t], y[t, o] if add else z, I, gs)
        return uint4_rows

    if s_row.ndim == 1 and len(a) == 3:      # int8 or packed int4 rows, W8A16 on this host
        def int8_rows(y, o, q_row, s_row, a, add):
            if a[1].shape[0] == 0 or s_row.shape[0] != 1:    # grouped rows: the f32 tiles
                f32_rows(y, o, q_row, s_row, a, add)
            else:
                a16_rows(y, o, q_row, s_row, a[1], a[2], add, 0)
        return int8_rows
    return lambda y, o, q_row, s_row, a, add: f32_rows(y, o, q_row, s_row, a, add)


ROWS = 4    # rows of one W8A16 tile (a16_rows_block)
ITEM = 16   # rows a parallel work item multiplies in one rows_times_tokens call (a multiple of ROWS)


def rows_times_tokens(y, o, q, r, s, sr, n, a, add):
    """y[t, o + k] (+)= (q[r + k] * s[sr + k]) . token t for k < n, for every token of the activations a
    (`activations` of q, s). Where rows multiply int16 tokens (A16 hosts, one scale a row) and there are 4
    tokens or more, four rows at once times four tokens at once (a16_rows_block); elsewhere row by row
    (row_times_tokens). The same bits either way."""
    raise NotImplementedError("compiled code only")


@overload(rows_times_tokens, inline="always")
def _rows_times_tokens(y, o, q, r, s, sr, n, a, add):
    if A16 and s.ndim == 2 and len(a) == 3:
        def blocks(y, o, q, r, s, sr, n, a, add):
            xq, xs = a[1], a[2]
            if xq.shape[0] >= 4 and s.shape[1] == 1:
                a16_rows_block(y, o, q, r, s, sr, n, xq, xs, add)
            elif xq.shape[0] > 0 and s.shape[1] == 1:     # 1-3 tokens: a decode step's rows, inlined
                for k in range(n):
                    a16_rows(y, o + k, q[r + k], s[sr + k], xq, xs, add, 0)
            else:                                           # grouped rows: the f32 tiles
                rows_one_by_one(y, o, q, r, s, sr, n, a, add)
        return blocks

    def rows(y, o, q, r, s, sr, n, a, add):
        for k in range(n):
            row_times_tokens(y, o + k, q[r + k], s[sr + k], a, add)
    return rows


# Calls, not inlined (one a work item of ITEM rows): the 16-sum tiles and the f32 tiles inlined at every
# call site of the layer's parallel regions made compiling a layer take minutes (measured); the tiles of
# 1-3 tokens stay inlined (called per work item, a decode step of one sequence ran 20-40% slower)
@njit(fastmath=True, cache=True, nogil=True)
def rows_one_by_one(y, o, q, r, s, sr, n, a, add):
    for k in range(n):
        row_times_tokens(y, o + k, q[r + k], s[sr + k], a, add)


@njit(fastmath=True, cache=True, nogil=True)
def a16_rows_block(y, o, q, r, s, sr, n, xq, xs, add):
    """Rows q[r + k] (scales s[sr + k]) into columns o + k of y, k < n, times the int16 tokens xq, xs
    (kernels/rowdot_a16.py): tiles of 4 rows x 4 tokens (q8a16_dot_4x4: each row's bytes and each token's
    activations loaded once for the 16 sums), each row's last 1-3 tokens, and the last 1-3 rows, by
    a16_rows."""
    T, I = xq.shape
    z = np.float32(0.0)
    for k in range(0, n - ROWS + 1, ROWS):
        q0, q1, q2, q3 = q[r + k], q[r + k + 1], q[r + k + 2], q[r + k + 3]
        s0, s1, s2, s3 = s[sr + k], s[sr + k + 1], s[sr + k + 2], s[sr + k + 3]
        o0, o1, o2, o3 = o + k, o + k + 1, o + k + 2, o + k + 3
        t = 0
        while t + 4 <= T:
            if add:
                b = (y[t, o0], y[t + 1, o0], y[t + 2, o0], y[t + 3, o0], y[t, o1], y[t + 1, o1], y[t + 2, o1],
                     y[t + 3, o1], y[t, o2], y[t + 1, o2], y[t + 2, o2], y[t + 3, o2],
                     y[t, o3], y[t + 1, o3], y[t + 2, o3], y[t + 3, o3])
            else:
                b = (z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z)
            v = q8a16_dot_4x4(q0, q1, q2, q3, s0, s1, s2, s3, xq[t], xq[t + 1], xq[t + 2], xq[t + 3],
                              xs[t], xs[t + 1], xs[t + 2], xs[t + 3], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
                              b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15], I)
            (y[t, o0], y[t + 1, o0], y[t + 2, o0], y[t + 3, o0], y[t, o1], y[t + 1, o1], y[t + 2, o1],
             y[t + 3, o1], y[t, o2], y[t + 1, o2], y[t + 2, o2], y[t + 3, o2],
             y[t, o3], y[t + 1, o3], y[t + 2, o3], y[t + 3, o3]) = v
            t += 4
        if t < T:
            for m in range(ROWS):
                a16_rows(y, o + k + m, q[r + k + m], s[sr + k + m], xq, xs, add, t)
    for k in range(n - n % ROWS, n):
        a16_rows(y, o + k, q[r + k], s[sr + k], xq, xs, add, 0)


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def a16_rows(y, o, q_row, s_row, xq, xs, add, t0):
    """y[t, o] (+)= row o . token t for the int16 tokens xq (T, I), xs (T,) (kernels/rowdot_a16.py), t >= t0,
    in tiles of 3, then one of 2 or 1: a16_rows_block's tails and decode steps of 1-3 tokens (4 and more run
    in a16_rows_block; the same sums in any tile)."""
    T, I = xq.shape
    z = np.float32(0.0)
    t = t0
    while t + 3 <= T:
        b0, b1, b2 = (y[t, o], y[t + 1, o], y[t + 2, o]) if add else (z, z, z)
        y[t, o], y[t + 1, o], y[t + 2, o] = q8a16_dot_3(q_row, s_row, xq[t], xq[t + 1], xq[t + 2],
                                                        xs[t], xs[t + 1], xs[t + 2], b0, b1, b2, I)
        t += 3
    if T - t == 2:
        b0, b1 = (y[t, o], y[t + 1, o]) if add else (z, z)
        y[t, o], y[t + 1, o] = q8a16_dot_2(q_row, s_row, xq[t], xq[t + 1], xs[t], xs[t + 1], b0, b1, I)
    elif T - t == 1:
        (y[t, o],) = q8a16_dot_1(q_row, s_row, xq[t], xs[t], y[t, o] if add else z, I)


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def f32_rows(y, o, q_row, s_row, a, add):
    x = a[0]
    T, I = x.shape
    gs = I // s_row.shape[-1]
    z = np.float32(0.0)
    t = 0
    if WIDE:     # AVX-512: tiles of 8 tokens, then one of 4 (the same sums as any other tile: rowdot.py)
        while t + 8 <= T:
            b = (y[t, o], y[t + 1, o], y[t + 2, o], y[t + 3, o],
                 y[t + 4, o], y[t + 5, o], y[t + 6, o], y[t + 7, o]) if add else (z, z, z, z, z, z, z, z)
            (y[t, o], y[t + 1, o], y[t + 2, o], y[t + 3, o],
             y[t + 4, o], y[t + 5, o], y[t + 6, o], y[t + 7, o]) = q8_dot_8(
                q_row, s_row, x[t], x[t + 1], x[t + 2], x[t + 3], x[t + 4], x[t + 5], x[t + 6], x[t + 7],
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], I, gs)
            t += 8
        if T - t >= 4:
            b0, b1, b2, b3 = (y[t, o], y[t + 1, o], y[t + 2, o], y[t + 3, o]) if add else (z, z, z, z)
            y[t, o], y[t + 1, o], y[t + 2, o], y[t + 3, o] = q8_dot_4(
                q_row, s_row, x[t], x[t + 1], x[t + 2], x[t + 3], b0, b1, b2, b3, I, gs)
            t += 4
    while t + 3 <= T:
        b0, b1, b2 = (y[t, o], y[t + 1, o], y[t + 2, o]) if add else (z, z, z)
        y[t, o], y[t + 1, o], y[t + 2, o] = q8_dot_3(q_row, s_row, x[t], x[t + 1], x[t + 2], b0, b1, b2, I, gs)
        t += 3
    if T - t == 2:
        b0, b1 = (y[t, o], y[t + 1, o]) if add else (z, z)
        y[t, o], y[t + 1, o] = q8_dot_2(q_row, s_row, x[t], x[t + 1], b0, b1, I, gs)
    elif T - t == 1:
        (y[t, o],) = q8_dot_1(q_row, s_row, x[t], y[t, o] if add else z, I, gs)


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def matmul_tiles(y, q, scale, x):
    """(q (O,I) int8, or (O,I/2) packed 4-bit, times scale (O,G), or (O,2,G) scales and offsets for
    uint4) @ x (T,I)^T -> y (T,O), each row by
    row_times_tokens (the 4-bit linears' streaming kernel outside the fused path)"""
    a = activations(x, q, scale)
    O = q.shape[0]
    for item in prange((O + ITEM - 1) // ITEM):
        o = item * ITEM
        rows_times_tokens(y, o, q, o, scale, o, min(ITEM, O - o), a, False)


@njit(fastmath=True, cache=True, nogil=True)
def matmul_tiles_rows(y, q, scale, x, row0):
    """y[:, row0 + r] = row r of q (a chunk of rows) times every row of x, by row_times_tokens, with the
    scales of rows row0.. of `scale` (the whole tensor's); serial (the caller spreads chunks)."""
    a = activations(x, q, scale)
    rows_times_tokens(y, row0, q, 0, scale, row0, q.shape[0], a, False)


@njit(parallel=True, fastmath=True, cache=True, nogil=True, error_model="numpy")
def layer_q8(x, h, q, att, f, tmp, scores,
             attn_norm, wqkv_q, wqkv_s, wo_q, wo_s, ffn_norm, wgu_q, wgu_s, wd_q, wd_s,
             l, n_layers, k_addr, v_addr, cap, seq, pos, k_like, v_like, cos, sin, eps):
    """Layer l, in place on the residual x (T,D) of rows t at positions pos[t] of sequences seq[t].

    scratch: h (T,D), q (T,Q), att (T,Q), f (T,F), tmp (T, >= max(Q+2KE, F)), scores (T*H, >= max pos+1)
    weights: attn_norm, ffn_norm (D,); wqkv (Q+2KE, D); wo (D, Q); wgu (2F, D) = [gate | up]; wd (D, F)
    KV caches: see the module doc; row t's key and value are written at [l, :, pos[t]] of its sequence
    cos, sin (T, E/2): the rotation of each row's position
    """
    T, D = x.shape
    Q = q.shape[1]
    E = 2 * cos.shape[1]
    H = Q // E
    K = (wqkv_q.shape[0] - Q) // (2 * E)
    F = f.shape[1]
    half = E // 2
    group = H // K
    inv_sqrt_e = np.float32(1.0 / np.sqrt(E))
    # attention rmsnorm
    rmsnorm(h, x, attn_norm, eps)
    a_qkv = activations(h, wqkv_q, wqkv_s)
    # qkv matmuls in blocks of row pairs (i, i+E/2) of one head: RoPE on q and k, then k and v into the caches
    nb = (half + ITEM - 1) // ITEM
    for j in prange((H + 2 * K) * nb):
        head = j // nb
        i0 = (j % nb) * ITEM
        n = min(ITEM, half - i0)
        rows_times_tokens(tmp, head * E + i0, wqkv_q, head * E + i0, wqkv_s, head * E + i0, n, a_qkv, False)
        rows_times_tokens(tmp, head * E + i0 + half, wqkv_q, head * E + i0 + half, wqkv_s, head * E + i0 + half, n,
                          a_qkv, False)
        for i in range(i0, i0 + n):
            r0 = head * E + i
            r1 = r0 + half
            for t in range(T):
                a = tmp[t, r0]
                b = tmp[t, r1]
                if head < H + K:
                    c = cos[t, i]
                    s = sin[t, i]
                    a, b = a * c - b * s, b * c + a * s
                if head < H:
                    q[t, r0] = a
                    q[t, r1] = b
                else:
                    tmp[t, r0] = a
                    tmp[t, r1] = b
    write_kv(tmp, Q, K, E, l, n_layers, k_addr, v_addr, cap, seq, pos, k_like, v_like)
    # multi-head attention (grouped-query: H/K query heads share a kv head); row t sees 0..pos[t].
    # Through 1-D row views and a fresh accumulator: indexing the 4-D caches and the shared `att` inside
    # the loops kept LLVM from hoisting and vectorizing them (4x slower at 128 positions, measured)
    for th in prange(T * H):
        t = th // H
        hd = th % H
        sq = seq[t]
        keys = kv_cache(k_addr[sq], n_layers, K, cap[sq], E, k_like)[l, hd // group]     # (S, E)
        values = kv_cache(v_addr[sq], n_layers, K, cap[sq], E, v_like)[l, hd // group]
        n = pos[t] + 1
        qr = q[t, hd * E:(hd + 1) * E]
        sr = scores[th]
        m = np.float32(-np.inf)
        for p in range(n):
            kr = keys[p]
            sc = np.float32(0.0)
            for e in range(E):
                sc += qr[e] * to_f32(kr[e])
            sc *= inv_sqrt_e
            sr[p] = sc
            m = max(m, sc)
        total = np.float32(0.0)
        for p in range(n):
            w = exp_f32(sr[p] - m)
            sr[p] = w
            total += w
        inv_total = np.float32(1.0) / total
        acc = np.zeros(E, np.float32)
        for p in range(n):
            w = sr[p] * inv_total
            vr = values[p]
            for e in range(E):
                acc[e] += w * to_f32(vr[e])
        att[t, hd * E:(hd + 1) * E] = acc
    # output projection and residual connection
    a_o = activations(att, wo_q, wo_s)
    for item in prange((D + ITEM - 1) // ITEM):
        o = item * ITEM
        rows_times_tokens(x, o, wo_q, o, wo_s, o, min(ITEM, D - o), a_o, True)
    # ffn rmsnorm
    rmsnorm(h, x, ffn_norm, eps)
    a_gu = activations(h, wgu_q, wgu_s)
    # SwiGLU: gate rows i and up rows F+i in blocks of SILU_BLOCK, f = silu(gate) * up (exp_f32: the same
    # bits in a vector lane or alone, so the SiLU may vectorize whatever the number of rows)
    for blk in prange(F // SILU_BLOCK):
        i0 = blk * SILU_BLOCK
        rows_times_tokens(f, i0, wgu_q, i0, wgu_s, i0, SILU_BLOCK, a_gu, False)
        rows_times_tokens(tmp, i0, wgu_q, F + i0, wgu_s, F + i0, SILU_BLOCK, a_gu, False)
        for t in range(T):   # through 1-D row views: indexed f[t, i], tmp[t, i] it ran scalar, 5x slower
            fr = f[t, i0:i0 + SILU_BLOCK]
            ur = tmp[t, i0:i0 + SILU_BLOCK]
            for e in range(SILU_BLOCK):
                g = fr[e]
                fr[e] = g / (np.float32(1.0) + exp_f32(-g)) * ur[e]
    # down projection and residual connection
    a_d = activations(f, wd_q, wd_s)
    for item in prange((D + ITEM - 1) // ITEM):
        o = item * ITEM
        rows_times_tokens(x, o, wd_q, o, wd_s, o, min(ITEM, D - o), a_d, True)


@njit(parallel=True, fastmath=True, cache=True, nogil=True, error_model="numpy")
def logits_q8(out, x, h, rows, norm, head_q, head_s, eps):
    """final rmsnorm of the rows `rows` of x (T,D) into h[:J], then the classifier:
    out (J,V) = (head_q * head_s) @ h[:J] for J = len(rows)"""
    J = rows.shape[0]
    for j in range(J):
        h[j] = x[rows[j]]
    hj = h[:J]
    rmsnorm(hj, hj, norm, eps)
    a = activations(hj, head_q, head_s)
    V = head_q.shape[0]
    for item in prange((V + ITEM - 1) // ITEM):
        v = item * ITEM
        rows_times_tokens(out, v, head_q, v, head_s, v, min(ITEM, V - v), a, False)


@njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def model_q8(out, x, h, q, att, f, tmp, scores,
             attn_norm, wqkv_q, wqkv_s, wo_q, wo_s, ffn_norm, wgu_q, wgu_s, wd_q, wd_s,
             k_addr, v_addr, cap, seq, pos, k_like, v_like, cos, sin, eps, norm, head_q, head_s, head_rows):
    """All L layers over the rows of x, then the logits of the rows head_rows: out (J,V); one call per
    step. The linears' q and scale are tuples of L arrays; attn_norm, ffn_norm (L,D)."""
    L = len(wqkv_q)
    for l in range(L):
        layer_q8(x, h, q, att, f, tmp, scores,
                 attn_norm[l], wqkv_q[l], wqkv_s[l], wo_q[l], wo_s[l], ffn_norm[l], wgu_q[l], wgu_s[l],
                 wd_q[l], wd_s[l], l, L, k_addr, v_addr, cap, seq, pos, k_like, v_like, cos, sin, eps)
    logits_q8(out, x, h, head_rows, norm, head_q, head_s, eps)
