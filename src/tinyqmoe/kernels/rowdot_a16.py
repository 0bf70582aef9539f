"""An int8 weight row times a few tokens quantized to int16, with exact integer sums (W8A16).

    q8a16_dot_R(q, s, xq_0..xq_{R-1}, xs_0..xs_{R-1}, b_0..b_{R-1}, n) -> R float32, R = 1, 2, 3:
        b_r + (sum_{i < n} q[i] * xq_r[i]) * (s[0] * xs_r)
    q8a16_dot_4x4(q_0..q_3, s_0..s_3, xq_0..xq_3, xs_0..xs_3, b_0..b_15, n) -> 16 float32:
        four rows times four tokens, (row m, token r) at 4m + r, each as q8a16_dot_1 of that row and token

q an int8 row of n inputs with one scale s[0] (per-channel rows: G = 1), or a uint8 row of n/2 bytes
holding int4 values (two's complement, input 2m in the low nibble of byte m: docs/FORMAT.md §5), unpacked
in registers to the same values (so the same sums as the row widened to int8); xq_r token r's activations
quantized per token to int16 by `quantize_a16` (xs_r = max|x_r| / 32767, xq_r = rint(x_r / xs_r)).
The products are integers summed exactly: 32 inputs a step, sign-extended to int16 and multiplied in
pairs into 16 int32 lanes (`vpmaddwd`; with AVX-512 VNNI the add folds into `vpdpwssd`, one instruction
for 32 multiply-adds of one token). A lane's int32 sum is exact for up to SPAN inputs (|q| <= 128,
|xq| <= 32767: SPAN / 32 steps x 2 x 128 x 32767 < 2^31); each span's lanes are then converted to f32
and added, in order, to the token's float lanes, which are summed pairwise (rowdot._lane_sums), scaled,
and added to b_r. Integer sums do not depend on their order, and the float steps after them are fixed
(EXACT), so a token's result is the same bit for bit in every tile and every batch: the batch invariance
the server needs, as in kernels/rowdot.py.

Why: with 8 tokens a row, the f32 tiles spend 20 instructions per 256 multiply-adds (the weights
converted to f32, one FMA per 16 lanes and token); here it is one sign-extension and 8 `vpdpwssd`.
Why 4 x 4 and not one row times 8 tokens: a step of one row and R tokens loads R + 1 vectors for R
multiply-adds; 4 rows x 4 tokens load 8 (4 widened weight vectors, 4 token vectors) for 16, and the 16
int32 accumulators still fit the 32 registers. Streamed rows (benchmarks/row_tiles.py, 2 threads, Zen 5,
alternated with the 1 x 8 tiles): 4 tokens 113-127 against 77-94 GMAC/s, 8 tokens 174-178 against
124-135, 16 tokens 200-208 against 146-153; one token the same (it stays a 1-row kernel: the weights are
the traffic). The rows of a tile are any four rows (kernels/layer.py a16_rows_block).
int16 activations keep the float path's accuracy (a per-token step of max|x| / 32767; int8 activations
per token changed 17% of the default model's greedy next tokens, per 32 inputs 5%, measured). Used where
the host has AVX-512 with VNNI (`A16`), for rows with one scale (kernels/layer.py row_times_tokens);
elsewhere, and for grouped or offset rows, the f32 tiles of kernels/rowdot.py.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from tinyqmoe.kernels.rowdot import _FEATURES, EXACT, WIDE, _lane_sums, _splat

A16 = WIDE and "+avx512bw" in _FEATURES and "+avx512vnni" in _FEATURES
STEP = 32        # inputs a step: one <32 x i16> vector of a token's activations
SPAN = 8192      # inputs whose int32 lane sums cannot overflow (8192 / 32 x 2 x 128 x 32767 < 2^31)
QMAX = 32767     # the activations' int16 range: -QMAX..QMAX
# Weight bytes ahead of the current step that each step asks the cache for (`prefetch`): rows are
# contiguous, so this reaches ~7 rows of 576 ahead, across the row boundary the hardware prefetcher
# only follows after the next row's first miss. A decode step of 8 sequences 9.6-10.8 against 12.0-13.3
# ms without it, one sequence 4.3-5.3 against 4.9-6.1 ms (3 of 4 and 4 of 4 alternated runs, Zen 5).
PREFETCH = 4096


def takes_a16(n_inputs: int, groups: int, offsets: bool = False) -> bool:
    """Do int8 rows of n_inputs inputs and `groups` scales a row multiply int16 tokens on this host
    (kernels/layer.py row_times_tokens)? Then every source multiplies them so (weights/linear.py,
    weights/chunked.py), whatever the number of tokens, and gets the same bits."""
    return A16 and groups == 1 and not offsets and n_inputs > 0 and n_inputs % STEP == 0


@njit(cache=True, nogil=True, inline="always")
def empty_tokens(n, I):
    """An (n, I) int16 array for quantize_a16 whose rows start on 64-byte boundaries (I % 32 == 0): each
    step then loads one cache line per token. numba aligns arrays to 32 bytes only; with the rows 32 bytes
    off a line, every load is split in two and the 8-token tile ran at 104 against 164 GMAC/s (measured)."""
    raw = np.empty(n * I + 32, np.int16)
    start = ((-raw.ctypes.data) % 64) // 2
    return raw[start:start + n * I].reshape((n, I))


# fastmath=False said, not left out: numba compiles a callee that does not set it with its caller's
# fast-math (kernels/layer.py calls this from fastmath code), and caches that version for every caller;
# then x * (32767 / m) was reassociated and 1 value in ~5,000 rounded to the other int16 (measured)
@njit(cache=True, nogil=True, fastmath=False)
def quantize_a16(xq, xs, x):
    """x (T, I) f32 -> xq (T, I) int16 and xs (T,) f32: per token xs = max|x| / 32767 (1 for a zero
    token) and xq = rint(x * (32767 / max|x|)), in -32767..32767."""
    T, I = x.shape
    for t in range(T):
        m = np.float32(0.0)
        for i in range(I):
            m = max(m, abs(x[t, i]))
        if not m > 0:        # zero (or NaN from a forged file: garbage out, never a fault)
            xs[t] = np.float32(1.0)
            xq[t] = 0
            continue
        inv = np.float32(np.float32(QMAX) / m)          # float32 throughout, as numpy computes it
        xs[t] = np.float32(m / np.float32(QMAX))
        for i in range(I):
            v = np.rint(np.float32(x[t, i] * inv))
            v = min(max(v, np.float32(-QMAX)), np.float32(QMAX))
            xq[t, i] = np.int16(v)


def _codegen(R, packed, M=1):
    """The IR of M rows (M = 1, 4) times R tokens: each step loads and widens every row's 32 weights
    once and each token's 32 activations once, then M x R `vpdpwssd`. Outputs row-major: (row m, token r)
    at m * R + r."""
    def codegen(context, builder, signature, args):
        i8, i16, i32, i64, f32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
        v32i8, v32i16, v16i32, v16f32 = (ir.VectorType(i8, 32), ir.VectorType(i16, 32), ir.VectorType(i32, 16),
                                         ir.VectorType(f32, 16))
        K = 2 * M + R                                # arrays: M rows, M scales, R token rows
        arrays = [context.make_array(ty)(context, builder, val).data
                  for ty, val in zip(signature.args[:K], args[:K])]
        q_ptrs, s_ptrs, xq_ptrs = arrays[:M], arrays[M:2 * M], arrays[2 * M:]
        xs_vals = args[K: K + R]
        biases = args[K + R: K + R + M * R]
        n = args[K + R + M * R]
        n = builder.sext(n, i64) if n.type.width < 64 else n
        madd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16i32, [v32i16, v32i16]),
                                              "llvm.x86.avx512.pmaddw.d.512")
        c = lambda v: ir.Constant(i64, v)  # noqa: E731
        prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [
            ir.IntType(8).as_pointer(), i32, i32, i32]), "llvm.prefetch.p0i8")
        zero_i, zero_f = ir.Constant(v16i32, None), ir.Constant(v16f32, None)
        A = M * R                                    # accumulators: (row m, token r) at m * R + r

        entry = builder.basic_block
        scales = [builder.load(p) for p in s_ptrs]
        outer = builder.append_basic_block("a16.span")
        inner = builder.append_basic_block("a16.loop")
        span_end = builder.append_basic_block("a16.span_end")
        done = builder.append_basic_block("a16.done")
        builder.cbranch(builder.icmp_signed(">", n, c(0)), outer, done)

        builder.position_at_end(outer)              # a span of <= SPAN inputs: int32 lanes from zero
        i0 = builder.phi(i64)
        accf = [builder.phi(v16f32) for _ in range(A)]
        end = builder.add(i0, c(SPAN))
        end = builder.select(builder.icmp_signed("<", end, n), end, n)

        def weights(q_ptr, i):                      # 32 inputs of a row, sign-extended to int16
            if packed:   # 16 bytes: input 2m in the low nibble of byte m, 2m+1 in the high one
                v16i8 = ir.VectorType(i8, 16)
                b = builder.load(builder.bitcast(builder.gep(q_ptr, [builder.lshr(i, c(1))]), v16i8.as_pointer()),
                                 align=1)
                four = ir.Constant(v16i8, [4] * 16)
                lo = builder.ashr(builder.shl(b, four), four)
                hi = builder.ashr(b, four)
                wq = builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(i32, 32),
                                                                [v for m in range(16) for v in (m, 16 + m)]))
            else:
                wq = builder.load(builder.bitcast(builder.gep(q_ptr, [i]), v32i8.as_pointer()), align=1)
            if PREFETCH:
                ahead = builder.gep(q_ptr, [builder.add(builder.lshr(i, c(1)) if packed else i, c(PREFETCH))])
                builder.call(prefetch, [ahead, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return builder.sext(wq, v32i16)

        def step(i, accs):                          # 32 inputs: one multiply-add a row and token
            ws = [weights(q_ptr, i) for q_ptr in q_ptrs]
            out = [None] * A
            for r in range(R):
                xv = builder.load(builder.bitcast(builder.gep(xq_ptrs[r], [i]), v32i16.as_pointer()), align=2)
                for m in range(M):
                    out[m * R + r] = builder.add(accs[m * R + r], builder.call(madd, [ws[m], xv]))
            return out

        # one or two sums: two chains of 32-input steps (even / odd steps), so a step does not wait for
        # the previous multiply-add; integer sums, so the split changes no result
        chains = 2 if A <= 2 else 1
        width = c(chains * STEP)
        builder.cbranch(builder.icmp_signed("<=", builder.add(i0, width), end), inner, span_end)
        builder.position_at_end(inner)
        i = builder.phi(i64)
        acc = [[builder.phi(v16i32) for _ in range(A)] for _ in range(chains)]
        new = [step(builder.add(i, c(k * STEP)), acc[k]) for k in range(chains)]
        i_next = builder.add(i, width)
        i.add_incoming(i0, outer)
        i.add_incoming(i_next, inner)
        for k in range(chains):
            for a in range(A):
                acc[k][a].add_incoming(zero_i, outer)
                acc[k][a].add_incoming(new[k][a], inner)
        last_start = builder.sub(end, width)       # the loop runs while a whole round of steps remains
        builder.cbranch(builder.icmp_signed("<=", i_next, last_start), inner, span_end)

        builder.position_at_end(span_end)           # the chains joined, a last odd step, the span's
        i_at = builder.phi(i64)                     # exact lane sums into the float lanes
        i_at.add_incoming(i0, outer)
        i_at.add_incoming(i_next, inner)
        parts = []
        for k in range(chains):
            row = []
            for a in range(A):
                v = builder.phi(v16i32)
                v.add_incoming(zero_i, outer)
                v.add_incoming(new[k][a], inner)
                row.append(v)
            parts.append(row)
        total = [builder.add(parts[0][a], parts[1][a]) if chains == 2 else parts[0][a] for a in range(A)]
        if chains == 2:
            odd = builder.icmp_signed("<", i_at, end)
            tail_bb = builder.append_basic_block("a16.tail")
            join_bb = builder.append_basic_block("a16.join")
            before_tail = builder.basic_block
            builder.cbranch(odd, tail_bb, join_bb)
            builder.position_at_end(tail_bb)
            tailed = step(i_at, total)
            builder.branch(join_bb)
            builder.position_at_end(join_bb)
            joined = []
            for a in range(A):
                v = builder.phi(v16i32)
                v.add_incoming(total[a], before_tail)
                v.add_incoming(tailed[a], tail_bb)
                joined.append(v)
            total = joined
        last = builder.basic_block
        newf = [builder.fadd(accf[a], builder.sitofp(total[a], v16f32), flags=EXACT) for a in range(A)]
        i0.add_incoming(c(0), entry)
        i0.add_incoming(end, last)
        for a in range(A):
            accf[a].add_incoming(zero_f, entry)
            accf[a].add_incoming(newf[a], last)
        builder.cbranch(builder.icmp_signed("<", end, n), outer, done)

        builder.position_at_end(done)
        finals = []
        for a in range(A):
            v = builder.phi(v16f32)
            v.add_incoming(zero_f, entry)
            v.add_incoming(newf[a], last)
            finals.append(v)
        sums = _lane_sums(builder, finals)
        outs = [builder.fadd(biases[m * R + r], builder.fmul(sums[m * R + r],
                                                             builder.fmul(scales[m], xs_vals[r], flags=EXACT),
                                                             flags=EXACT), flags=EXACT)
                for m in range(M) for r in range(R)]
        return context.make_tuple(builder, signature.return_type, outs)
    return codegen


def _typed(R, q, s, xq, xs, bs, n):
    """q, s: one row and its scale, or tuples of M rows and M scales (kernels of M x R outputs)."""
    qs, ss = (q, s) if isinstance(q, tuple) else ((q,), (s,))
    ok = (all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype in (types.int8, types.uint8) and a.layout == "C"
              and a.dtype == qs[0].dtype for a in qs)
          and all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.float32 and a.layout == "C"
                  for a in ss)
          and all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.int16 and a.layout == "C"
                  for a in xq)
          and len(bs) == len(qs) * R
          and all(v == types.float32 for v in xs + bs) and isinstance(n, types.Integer))
    if not ok:
        return None
    return (types.UniTuple(types.float32, len(bs))(*qs, *ss, *xq, *xs, *bs, n),
            _codegen(R, qs[0].dtype == types.uint8, len(qs)))


@intrinsic
def q8a16_dot_1(typingctx, q, s, xq0, xs0, b0, n):
    """b0 + (q . xq0) * (s[0] * xs0) -> (f32,)"""
    return _typed(1, q, s, (xq0,), (xs0,), (b0,), n)


@intrinsic
def q8a16_dot_2(typingctx, q, s, xq0, xq1, xs0, xs1, b0, b1, n):
    return _typed(2, q, s, (xq0, xq1), (xs0, xs1), (b0, b1), n)


@intrinsic
def q8a16_dot_3(typingctx, q, s, xq0, xq1, xq2, xs0, xs1, xs2, b0, b1, b2, n):
    return _typed(3, q, s, (xq0, xq1, xq2), (xs0, xs1, xs2), (b0, b1, b2), n)


@intrinsic
def q8a16_dot_4x4(typingctx, q0, q1, q2, q3, s0, s1, s2, s3, xq0, xq1, xq2, xq3, xs0, xs1, xs2, xs3,
                  b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, n):
    """Four rows times four tokens: row m's result for token r at m * 4 + r, each the same bits as the
    one-row kernels give (integer sums; the same float steps after them)."""
    return _typed(4, (q0, q1, q2, q3), (s0, s1, s2, s3), (xq0, xq1, xq2, xq3), (xs0, xs1, xs2, xs3),
                  (b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15), n)
