"""An int8 weight row times a few f32 token rows, each token's sum in an order the code fixes.

    q8_dot_R(q, s, x_0..x_{R-1}, b_0..b_{R-1}, n, gs) -> R float32, for R = 1, 2, 3 tokens
                                                                   (and 4, 8 where WIDE: AVX-512):
        b_r + sum_{i < n} (q[i] * s[i // gs]) * x_r[i]                 s float32 [G] (scales)
        b_r + sum_{i < n} fma(q[i], s[0, i // gs], s[1, i // gs]) * x_r[i]
                                                                       s float32 [2, G] (scales; offsets)

q is an int8 row of n values, or a uint8 row of n/2 bytes holding int4 values (docs/FORMAT.md §5:
input 2m in the low nibble of byte m, 2m+1 in the high one, two's complement, -8..7), unpacked in
registers: the same arithmetic on the same values as the row widened to int8, at half the bytes read.
An int8 row may carry an offset per group too (s (2, G): a row's G scales, then its G offsets, the
layout of docs/FORMAT.md §6.1 for uint4 widened to int8); the weight is then scale * q + offset, one
fused multiply-add per vector (two EXACT operations without FMA hardware), the same for every
tile. Packed uint4 rows take int8 activations instead (u4a8_dot_R below).

The row's bytes are loaded and converted to f32 once for all R tokens (what makes several sequences
decoded together cost little more than one); each token then adds into its own ACCS accumulators of
LANES floats: input i goes to lane i % LANES of accumulator (i // LANES) % ACCS, with a fused
multiply-add, in increasing i. At the end the accumulators are added ((0+1) + (2+3), or 0+1), scaled
(one scale per row; per-group scales, and offsets, apply to the converted weights instead), the lanes
summed pairwise ((l0+l1) + (l2+l3) ..., for several tokens at once through shuffles: `_lane_sums`), and
the sum added to b_r (a residual: inside, so that a fast-math caller's `y += result` cannot be fused or
re-associated differently in different tiles). No add or multiply here may be re-associated or
contracted (EXACT below), so LLVM keeps exactly that order: a token's result is the same bit for bit
whichever tile (R) it is computed in and whatever its tile mates are. That is the batch invariance the
server needs (a sequence's greedy text never depends on the batch), by construction rather than by
choosing one kernel per batch size.

The host picks the vector shape once (the order is the host's, like every float result): with AVX-512,
16 lanes x 2 accumulators and tiles of up to 8 tokens (16 accumulators in 32 registers: a row's bytes
converted once for 8 sequences); otherwise 8 lanes x 4 accumulators and tiles of up to 3 (16
registers). Both walk 32 inputs a step, one int8 activation block. On a 2-CPU AMD EPYC Zen 5 the wide
tiles made a decode step of 8 sequences ~1.25x faster (medians of alternated runs) and left one
sequence's unchanged (docs/serving.md).

uint4 rows in decode take int8 activations instead (u4a8_dot_R, at the end of this file: what a
--bits 4 container runs), with the same per-token discipline: an order fixed by the code, so the same
bits in any tile and any batch.

Explicit vector IR because LLVM, given a loop of several dot products, neither keeps such an order
(fast-math reassociates) nor shares the converted weights well without it (kernels/gemm_i8.py says
what it made of int8 tiles). n and gs must be multiples of BLOCK (`fits`); the arrays contiguous.
"""
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from tinyqmoe.kernels.gemm_i8 import ACT_BLOCK

_FEATURES = binding.get_host_cpu_features().flatten().split(",")
HAS_FMA = "+fma" in _FEATURES
# AVX-512 (Xeon, Zen 4/5): 16 f32 lanes a vector and 32 vector registers, so one tile holds the
# accumulators of 8 tokens (2 x 8 vectors) and a row's bytes are converted once for 8 tokens, not 3.
WIDE = "+avx512f" in _FEATURES
LANES = 16 if WIDE else 8   # f32 lanes of one vector (512 or 256 bits)
ACCS = 2 if WIDE else 4     # accumulators per token: independent FMAs to hide their latency at R=1
BLOCK = LANES * ACCS        # inputs per loop step: 32 either way (one int8 activation block, `fits`)
TILE = 8 if WIDE else 3     # most tokens in one tile (q8_dot_R): what the registers hold
# The flag every add and multiply here carries. numba's fast-math pass gives its flags (reassociation,
# contraction) to every floating-point instruction of a fastmath function that has none, intrinsics
# inlined into it included; `arcp` (reciprocals, which only division uses) keeps these exactly as written.
EXACT = ("arcp",)


def fits(n_inputs: int, group: int) -> bool:
    """Can q8_dot_R take rows of n_inputs inputs with one scale per `group` inputs?"""
    return n_inputs > 0 and n_inputs % BLOCK == 0 and group % BLOCK == 0 and n_inputs % group == 0


def _fma(builder):
    """fma(a, b, c) on f32 or <8 x f32>: the hardware instruction, or an EXACT multiply then add."""
    def fma(a, b, c):
        if not HAS_FMA:
            return builder.fadd(builder.fmul(a, b, flags=EXACT), c, flags=EXACT)
        name = f"llvm.fma.v{a.type.count}f32" if isinstance(a.type, ir.VectorType) else "llvm.fma.f32"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(a.type, [a.type] * 3), name)
        return builder.call(fn, [a, b, c])
    return fma


def _splat(builder):
    """A float broadcast to the `lanes` lanes of a vector."""
    def splat(value, lanes=LANES):
        vf, vi, i32 = ir.VectorType(ir.FloatType(), lanes), ir.VectorType(ir.IntType(32), lanes), ir.IntType(32)
        one = builder.insert_element(ir.Constant(vf, ir.Undefined), value, ir.Constant(i32, 0))
        return builder.shuffle_vector(one, one, ir.Constant(vi, [0] * lanes))
    return splat


def _codegen(R, packed, offsets):
    def codegen(context, builder, signature, args):
        i8, i32, i64, f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
        vni8, vni32, vnf32 = ir.VectorType(i8, LANES), ir.VectorType(i32, LANES), ir.VectorType(f32, LANES)
        v16i8 = ir.VectorType(i8, BLOCK // 2)
        arrays = [context.make_array(ty)(context, builder, val).data
                  for ty, val in zip(signature.args[: 2 + R], args[: 2 + R])]
        q_ptr, s_ptr, x_ptrs = arrays[0], arrays[1], arrays[2:]
        biases = args[2 + R: 2 + 2 * R]
        n, gs = (builder.sext(v, i64) if v.type.width < 64 else v for v in args[2 + 2 * R: 4 + 2 * R])
        fma, splat = _fma(builder), _splat(builder)

        def fadd(a, b):
            return builder.fadd(a, b, flags=EXACT)

        def fmul(a, b):
            return builder.fmul(a, b, flags=EXACT)

        zero = ir.Constant(vnf32, None)
        blocks_per_group = builder.udiv(gs, ir.Constant(i64, BLOCK))
        # rows with offsets always take the grouped loop (an offset cannot be factored out of the sum)
        one_group = ir.Constant(ir.IntType(1), 0) if offsets else builder.icmp_unsigned(">=", gs, n)
        n_groups = builder.udiv(n, gs) if offsets else None      # the offsets follow the G scales
        grouped_bb = builder.append_basic_block("rowdot.grouped")
        rowscale_bb = builder.append_basic_block("rowdot.rowscale")
        done = builder.append_basic_block("rowdot.done")
        builder.cbranch(builder.icmp_signed(">", n, ir.Constant(i64, 0)), grouped_bb, done)
        entry = builder.basic_block
        # the loop, twice: one scale for the whole row (multiplied into the finished sum) or one per
        # group (multiplied into the converted weights); the row's shape picks, never the tile
        builder.position_at_end(grouped_bb)
        ends = []
        for grouped in (True, False):
            loop = builder.append_basic_block("rowdot.loop")
            if grouped:
                builder.cbranch(one_group, rowscale_bb, loop)
                before = grouped_bb
            else:
                builder.position_at_end(rowscale_bb)
                s0 = builder.load(s_ptr)
                builder.branch(loop)
                before = rowscale_bb
            builder.position_at_end(loop)
            i = builder.phi(i64)
            k = builder.phi(i64)            # block within the scale group
            g = builder.phi(i64)            # scale group
            accs = [[builder.phi(vnf32) for _ in range(ACCS)] for _ in range(R)]
            scale = splat(builder.load(builder.gep(s_ptr, [g]))) if grouped else None
            with_offsets = offsets and grouped   # (the one-scale loop is never entered for such rows)
            offset = splat(builder.load(builder.gep(s_ptr, [builder.add(n_groups, g)]))) if with_offsets else None
            news = [[None] * ACCS for _ in range(R)]
            if packed:   # 16 bytes hold the block's 32 nibbles: input 2m low in byte m, 2m+1 high
                b = builder.load(builder.bitcast(builder.gep(q_ptr, [builder.lshr(i, ir.Constant(i64, 1))]),
                                                 v16i8.as_pointer()), align=1)
                four = ir.Constant(v16i8, [4] * (BLOCK // 2))
                lo = builder.ashr(builder.shl(b, four), four)       # sign-extended low nibbles
                hi = builder.ashr(b, four)
                order = [v for m in range(BLOCK // 2) for v in (m, BLOCK // 2 + m)]
                nibbles = builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(i32, BLOCK), order))
            for j in range(ACCS):
                off = builder.add(i, ir.Constant(i64, j * LANES))
                if packed:
                    part = ir.Constant(ir.VectorType(i32, LANES), list(range(j * LANES, (j + 1) * LANES)))
                    wq = builder.shuffle_vector(nibbles, ir.Constant(nibbles.type, ir.Undefined), part)
                else:
                    wq = builder.load(builder.bitcast(builder.gep(q_ptr, [off]), vni8.as_pointer()), align=1)
                w = builder.sitofp(builder.sext(wq, vni32), vnf32)
                if with_offsets:
                    w = fma(w, scale, offset)          # scale * q + offset
                elif grouped:
                    w = fmul(w, scale)
                for r in range(R):
                    xv = builder.load(builder.bitcast(builder.gep(x_ptrs[r], [off]), vnf32.as_pointer()), align=4)
                    news[r][j] = fma(w, xv, accs[r][j])
            i_next = builder.add(i, ir.Constant(i64, BLOCK))
            k1 = builder.add(k, ir.Constant(i64, 1))
            wrap = builder.icmp_unsigned("==", k1, blocks_per_group)
            k_next = builder.select(wrap, ir.Constant(i64, 0), k1)
            g_next = builder.add(g, builder.zext(wrap, i64))
            for phi, nxt in ((i, i_next), (k, k_next), (g, g_next)):
                phi.add_incoming(ir.Constant(i64, 0), before)
                phi.add_incoming(nxt, loop)
            for r in range(R):
                for j in range(ACCS):
                    accs[r][j].add_incoming(zero, before)
                    accs[r][j].add_incoming(news[r][j], loop)
            builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
            ends.append((loop, news))

        builder.position_at_end(done)
        finals = [[builder.phi(vnf32) for _ in range(ACCS)] for _ in range(R)]
        row_scale = builder.phi(f32)
        row_scale.add_incoming(ir.Constant(f32, 1.0), entry)
        for (block, news), grouped in zip(ends, (True, False)):
            row_scale.add_incoming(ir.Constant(f32, 1.0) if grouped else s0, block)
            for r in range(R):
                for j in range(ACCS):
                    finals[r][j].add_incoming(news[r][j], block)
        row_scale = splat(row_scale)
        for r in range(R):
            for f in finals[r]:
                f.add_incoming(zero, entry)
        tokens = []
        for r in range(R):
            v = finals[r]
            while len(v) > 1:        # (0+1) + (2+3), or 0+1
                v = [fadd(v[e], v[e + 1]) for e in range(0, len(v), 2)]
            # scaled before the lanes are summed: the result is an add, so a caller's `y += result`
            # (fast-math, contractible) can never fuse with it into a multiply-add in some tiles only
            tokens.append(fmul(v[0], row_scale))
        sums = _lane_sums(builder, tokens)
        outs = [fadd(biases[r], sums[r]) for r in range(R)]
        return context.make_tuple(builder, signature.return_type, outs)
    return codegen


def _lane_sums(builder, vectors):
    """Each vector's lanes summed pairwise, (l0+l1) + (l2+l3) ..., the same tree for every vector, but
    several vectors at a time: at each level, two vectors' lanes go through one even/odd shuffle and
    one add ([a0+a1, a2+a3, ..., b0+b1, ...]), so R tokens' sums take about R + log2(LANES) vector adds
    instead of R x (LANES - 1) scalar ones. Every sum is still the same two numbers added (an add is
    exact-commutative), so a token's result does not depend on the other vectors."""
    i32 = ir.IntType(32)
    seg = vectors[0].type.count                            # lanes of one vector's sum still apart
    labels = [[r] * seg for r in range(len(vectors))]      # which vector each lane belongs to
    vectors = list(vectors)
    while seg > 1:
        if len(vectors) == 1:                  # the vector's own lanes: n = its width
            pairs = [(vectors[0], vectors[0], labels[0], len(labels[0]))]
        else:                                  # two vectors' lanes, concatenated: n = twice the width
            if len(vectors) % 2:               # a zero vector pairs with the odd one out
                vectors.append(ir.Constant(vectors[0].type, None))
                labels.append([None] * len(labels[0]))
            pairs = [(vectors[k], vectors[k + 1], labels[k] + labels[k + 1], 2 * len(labels[k]))
                     for k in range(0, len(vectors), 2)]
        vectors, labels = [], []
        for a, b, lab, n in pairs:
            even = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, n // 2), list(range(0, n, 2))))
            odd = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, n // 2), list(range(1, n, 2))))
            vectors.append(builder.fadd(even, odd, flags=EXACT))
            labels.append(lab[0:n:2])
        seg //= 2
    out = {}
    for v, lab in zip(vectors, labels):
        for e, r in enumerate(lab):
            if r is not None:
                out[r] = builder.extract_element(v, ir.Constant(i32, e))
    return [out[r] for r in range(len(out))]


def _typed(R, q, s, xs, bs, n, gs):
    arrays_ok = (isinstance(q, types.Array) and q.ndim == 1 and q.dtype in (types.int8, types.uint8)
                 and q.layout == "C"
                 and isinstance(s, types.Array) and s.ndim in (1, 2) and s.dtype == types.float32
                 and s.layout == "C"
                 and all(isinstance(x, types.Array) and x.ndim == 1 and x.dtype == types.float32
                         and x.layout == "C" for x in xs))
    if not (arrays_ok and all(b == types.float32 for b in bs)
            and isinstance(n, types.Integer) and isinstance(gs, types.Integer)):
        return None
    if q.dtype == types.uint8 and s.ndim == 2:   # packed uint4: u4a8_dot_R
        return None
    return (types.UniTuple(types.float32, R)(q, s, *xs, *bs, n, gs),
            _codegen(R, q.dtype == types.uint8, s.ndim == 2))


@intrinsic
def q8_dot_1(typingctx, q, s, x0, b0, n, gs):
    """b0 + q (n,) int8 row with scales s (one per gs inputs) . x0 -> (f32,)"""
    return _typed(1, q, s, (x0,), (b0,), n, gs)


@intrinsic
def q8_dot_2(typingctx, q, s, x0, x1, b0, b1, n, gs):
    """b_r + the row . x_r for r = 0, 1 -> (f32, f32)"""
    return _typed(2, q, s, (x0, x1), (b0, b1), n, gs)


@intrinsic
def q8_dot_3(typingctx, q, s, x0, x1, x2, b0, b1, b2, n, gs):
    """b_r + the row . x_r for r = 0..2 -> 3 f32"""
    return _typed(3, q, s, (x0, x1, x2), (b0, b1, b2), n, gs)


@intrinsic
def q8_dot_4(typingctx, q, s, x0, x1, x2, x3, b0, b1, b2, b3, n, gs):
    """b_r + the row . x_r for r = 0..3 -> 4 f32 (a tile that fits the registers only with AVX-512: WIDE)"""
    return _typed(4, q, s, (x0, x1, x2, x3), (b0, b1, b2, b3), n, gs)


@intrinsic
def q8_dot_8(typingctx, q, s, x0, x1, x2, x3, x4, x5, x6, x7, b0, b1, b2, b3, b4, b5, b6, b7, n, gs):
    """b_r + the row . x_r for r = 0..7 -> 8 f32 (AVX-512 only: 16 accumulators of 16 lanes, WIDE)"""
    return _typed(8, q, s, (x0, x1, x2, x3, x4, x5, x6, x7), (b0, b1, b2, b3, b4, b5, b6, b7), n, gs)


# ---- uint4 rows times int8 activations (W4A8): what decoding a uint4 model runs

ACT = ACT_BLOCK   # inputs per activation scale, as the int8 prefill's: one 16-byte block of nibbles


def _codegen_u4a8(R):
    """b_r + sum over blocks k (group g = k*32 // gs) of
           fma(float(int32 sum of u * xq over block k), s[0, g] * xs_r[k], .)   in 8 lanes, blocks in order
         + sum over blocks of s[1, g] * xo_r[k]                                  (one scalar chain)
    u the row's nibbles (0..15) in the block's stored order (low nibbles = even inputs, then high = odd),
    xq_r the token's int8 activations in that order (quantize_u4a8), xs_r its scales, xo_r its blocks'
    sums xs * sum(xq): scale * (u . xq) * xs + offset * sum(x), the W4A8 product llama.cpp runs for Q4_1."""
    def codegen(context, builder, signature, args):
        i8, i16, i32, i64, f32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
        v16i8, v32i8, v16i16 = ir.VectorType(i8, 16), ir.VectorType(i8, 32), ir.VectorType(i16, 16)
        v8i32, v8f32 = ir.VectorType(i32, 8), ir.VectorType(f32, 8)
        arrays = [context.make_array(ty)(context, builder, val).data
                  for ty, val in zip(signature.args[: 2 + 3 * R], args[: 2 + 3 * R])]
        q_ptr, s_ptr = arrays[0], arrays[1]
        xq_ptrs, xs_ptrs, xo_ptrs = arrays[2:2 + R], arrays[2 + R:2 + 2 * R], arrays[2 + 2 * R:2 + 3 * R]
        biases = args[2 + 3 * R: 2 + 4 * R]
        n, gs = (builder.sext(v, i64) if v.type.width < 64 else v for v in args[2 + 4 * R: 4 + 4 * R])
        maddubs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16i16, [v32i8, v32i8]),
                                                 "llvm.x86.avx2.pmadd.ub.sw")
        madd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                              "llvm.x86.avx2.pmadd.wd")
        fma, splat = _fma(builder), _splat(builder)

        c = lambda v: ir.Constant(i64, v)  # noqa: E731
        nblocks = builder.udiv(n, c(ACT))
        blocks_per_group = builder.udiv(gs, c(ACT))
        n_groups = builder.udiv(n, gs)
        entry = builder.basic_block
        loop = builder.append_basic_block("u4a8.loop")
        done = builder.append_basic_block("u4a8.done")
        builder.cbranch(builder.icmp_signed(">", nblocks, c(0)), loop, done)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        kg = builder.phi(i64)           # block within the scale group (no division in the loop)
        g = builder.phi(i64)            # scale group
        accs = [builder.phi(v8f32) for _ in range(R)]
        offs = [builder.phi(f32) for _ in range(R)]
        scale = builder.load(builder.gep(s_ptr, [g]))
        offset = builder.load(builder.gep(s_ptr, [builder.add(n_groups, g)]))
        packed = builder.load(builder.bitcast(builder.gep(q_ptr, [builder.mul(k, c(ACT // 2))]), v16i8.as_pointer()),
                              align=1)
        low = builder.and_(packed, ir.Constant(v16i8, [15] * 16))
        high = builder.lshr(packed, ir.Constant(v16i8, [4] * 16))
        u = builder.shuffle_vector(low, high, ir.Constant(ir.VectorType(i32, 32), list(range(32))))
        ones = ir.Constant(v16i16, [1] * 16)
        news, new_offs = [], []
        for r in range(R):
            xv = builder.load(builder.bitcast(builder.gep(xq_ptrs[r], [builder.mul(k, c(ACT))]), v32i8.as_pointer()),
                              align=1)
            isum = builder.call(madd, [builder.call(maddubs, [u, xv]), ones])
            xs = builder.load(builder.gep(xs_ptrs[r], [k]))
            xo = builder.load(builder.gep(xo_ptrs[r], [k]))
            news.append(fma(builder.sitofp(isum, v8f32), splat(builder.fmul(scale, xs, flags=EXACT), 8), accs[r]))
            new_offs.append(fma(offset, xo, offs[r]))
        k_next = builder.add(k, c(1))
        kg1 = builder.add(kg, c(1))
        wrap = builder.icmp_unsigned("==", kg1, blocks_per_group)
        for phi, nxt in ((k, k_next), (kg, builder.select(wrap, c(0), kg1)), (g, builder.add(g, builder.zext(wrap, i64)))):
            phi.add_incoming(c(0), entry)
            phi.add_incoming(nxt, loop)
        for r in range(R):
            accs[r].add_incoming(ir.Constant(v8f32, None), entry)
            accs[r].add_incoming(news[r], loop)
            offs[r].add_incoming(ir.Constant(f32, 0.0), entry)
            offs[r].add_incoming(new_offs[r], loop)
        builder.cbranch(builder.icmp_signed("<", k_next, nblocks), loop, done)
        builder.position_at_end(done)
        finals = []
        for r in range(R):        # every phi first: a block's phis lead it
            v = builder.phi(v8f32)
            v.add_incoming(ir.Constant(v8f32, None), entry)
            v.add_incoming(news[r], loop)
            o = builder.phi(f32)
            o.add_incoming(ir.Constant(f32, 0.0), entry)
            o.add_incoming(new_offs[r], loop)
            finals.append((v, o))
        sums = _lane_sums(builder, [v for v, _ in finals])
        outs = [builder.fadd(biases[r], builder.fadd(sums[r], o, flags=EXACT), flags=EXACT)
                for r, (_, o) in enumerate(finals)]
        return context.make_tuple(builder, signature.return_type, outs)
    return codegen


def _typed_u4a8(R, q, s, xq, xs, xo, bs, n, gs):
    ok = (isinstance(q, types.Array) and q.ndim == 1 and q.dtype == types.uint8 and q.layout == "C"
          and isinstance(s, types.Array) and s.ndim == 2 and s.dtype == types.float32 and s.layout == "C"
          and all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.int8 and a.layout == "C" for a in xq)
          and all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.float32 and a.layout == "C"
                  for a in xs + xo)
          and all(b == types.float32 for b in bs) and isinstance(n, types.Integer) and isinstance(gs, types.Integer))
    if not ok:
        return None
    return types.UniTuple(types.float32, R)(q, s, *xq, *xs, *xo, *bs, n, gs), _codegen_u4a8(R)


@intrinsic
def u4a8_dot_1(typingctx, q, s, xq0, xs0, xo0, b0, n, gs):
    """b0 + the packed uint4 row q (scales and offsets s (2, G)) . token 0 quantized by quantize_u4a8"""
    return _typed_u4a8(1, q, s, (xq0,), (xs0,), (xo0,), (b0,), n, gs)


@intrinsic
def u4a8_dot_2(typingctx, q, s, xq0, xq1, xs0, xs1, xo0, xo1, b0, b1, n, gs):
    return _typed_u4a8(2, q, s, (xq0, xq1), (xs0, xs1), (xo0, xo1), (b0, b1), n, gs)


@intrinsic
def u4a8_dot_3(typingctx, q, s, xq0, xq1, xq2, xs0, xs1, xs2, xo0, xo1, xo2, b0, b1, b2, n, gs):
    return _typed_u4a8(3, q, s, (xq0, xq1, xq2), (xs0, xs1, xs2), (xo0, xo1, xo2), (b0, b1, b2), n, gs)
