"""int8 x int8 products for prefill: activations quantized per token and block, int32 sums.

y[t, o] = sum_g ws[o, g] * xs[t, g] * sum_{i in group g} wq[o, i] * xq[t, i]

numba widens integer arithmetic to 64 bits, which LLVM cannot turn into vpmaddwd / vpdpbusd; the
`madd_i32` intrinsic keeps the multiply-add in 32 bits. What LLVM makes of loops (numba 0.68,
AVX2 Zen 3; docs/benchmarks.md "Engine kernels"): a single int8 dot product loop becomes
vpmovsxbw + vpmaddwd + vpaddd; a register tile of several dots in one loop (what a GEMM needs to
reuse loads) is vectorized with vpmovsxbd + vpmulld instead, no faster than f32 sgemm. So on AVX2
CPUs `gemm_q8q8_avx2` runs its 4x2 tile as explicit vector code (`tile_dot_4x2`: vpmovsxbw loads,
vpmaddwd, vpaddd); `gemm_q8q8` is the portable loop version with the same contract.
"""
import numpy as np
from llvmlite import binding, ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

HAS_AVX2 = "+avx2" in binding.get_host_cpu_features().flatten().split(",")
ACT_BLOCK = 32   # inputs per activation scale in linear_q8q8 (the block tile_dot_4x2 takes: a power of 2, 16 | ACT_BLOCK)


@intrinsic
def madd_i32(typingctx, acc, a, b):
    """acc (int32) + a * b, a and b small integers sign-extended, in 32-bit arithmetic"""
    def codegen(context, builder, signature, args):
        acc, a, b = args
        i32 = ir.IntType(32)
        a32 = builder.sext(a, i32) if signature.args[1].signed else builder.zext(a, i32)
        b32 = builder.sext(b, i32) if signature.args[2].signed else builder.zext(b, i32)
        return builder.add(acc, builder.mul(a32, b32, flags=["nsw"]), flags=["nsw"])
    return types.int32(types.int32, a, b), codegen


@njit(fastmath=True, cache=True, nogil=True)
def quantize_rows_i8(xq, xs, x):
    """x (T,I) f32 -> xq (T,I) int8, xs (T,G) f32: symmetric per token and group of I//G inputs,
    xq = round(x / xs), xs = max|x| / 127 (1 for an all-zero group)"""
    T, I = x.shape
    G = xs.shape[1]
    gs = I // G
    for t in range(T):
        for g in range(G):
            b = g * gs
            m = np.float32(0.0)
            for i in range(gs):
                m = max(m, abs(x[t, b + i]))
            s = m / np.float32(127.0) if m > 0 else np.float32(1.0)
            xs[t, g] = s
            inv = np.float32(1.0) / s
            for i in range(gs):
                xq[t, b + i] = np.int8(np.rint(x[t, b + i] * inv))


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def gemm_q8q8(y, wq, ws, xq, xs, block_rows):
    """(wq (O,I) int8 * ws (O,G)) @ (xq (T,I) int8 * xs (T,GX))^T -> y (T,O): int32 sums over each
    activation block of I//GX inputs, scaled by that block's xs and its weight group's ws (a weight
    group, I//G inputs, must hold whole activation blocks).

    Threads take blocks of `block_rows` weight rows (size them to half the L2: the block stays in
    cache while every token passes over it); inside a block, tiles of 4 rows x 2 tokens."""
    O, I = wq.shape
    T = xq.shape[0]
    G = xs.shape[1]            # the helpers loop over activation blocks
    ab = I // G
    gs = I // ws.shape[1]
    for blk in prange((O + block_rows - 1) // block_rows):
        r0 = blk * block_rows
        r1 = min(O, r0 + block_rows)
        for t in range(0, T - 1, 2):
            o = r0
            while o + 4 <= r1:
                _tile_4x2(y, wq, ws, xq, xs, o, t, G, ab, gs)
                o += 4
            for oo in range(o, r1):
                for tt in range(t, t + 2):
                    y[tt, oo] = _dot_q8q8(wq, ws, xq, xs, oo, tt, G, ab, gs)
        if T % 2:
            for oo in range(r0, r1):
                y[T - 1, oo] = _dot_q8q8(wq, ws, xq, xs, oo, T - 1, G, ab, gs)


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _dot_q8q8(wq, ws, xq, xs, o, t, G, ab, gs):
    """y[t, o] of gemm_q8q8, alone: G activation blocks of ab inputs, weight groups of gs inputs"""
    w = wq[o]
    x = xq[t]
    acc = np.float32(0.0)
    for g in range(G):
        b = g * ab
        a = np.int32(0)
        for i in range(ab):
            a = madd_i32(a, w[b + i], x[b + i])
        acc += np.float32(a) * ws[o, b // gs] * xs[t, g]
    return acc


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _tile_4x2(y, wq, ws, xq, xs, o, t, G, ab, gs):
    """y[t:t+2, o:o+4] of gemm_q8q8: 8 int32 sums sharing each load of 4 weight and 2 token rows"""
    w0, w1, w2, w3 = wq[o], wq[o + 1], wq[o + 2], wq[o + 3]
    x0, x1 = xq[t], xq[t + 1]
    f00 = f10 = f20 = f30 = f01 = f11 = f21 = f31 = np.float32(0.0)
    for g in range(G):
        b = g * ab
        wg = b // gs
        a00 = a10 = a20 = a30 = a01 = a11 = a21 = a31 = np.int32(0)
        for ii in range(ab):
            i = b + ii
            a00 = madd_i32(a00, w0[i], x0[i])
            a10 = madd_i32(a10, w1[i], x0[i])
            a20 = madd_i32(a20, w2[i], x0[i])
            a30 = madd_i32(a30, w3[i], x0[i])
            a01 = madd_i32(a01, w0[i], x1[i])
            a11 = madd_i32(a11, w1[i], x1[i])
            a21 = madd_i32(a21, w2[i], x1[i])
            a31 = madd_i32(a31, w3[i], x1[i])
        s0, s1 = xs[t, g], xs[t + 1, g]
        f00 += np.float32(a00) * ws[o, wg] * s0
        f10 += np.float32(a10) * ws[o + 1, wg] * s0
        f20 += np.float32(a20) * ws[o + 2, wg] * s0
        f30 += np.float32(a30) * ws[o + 3, wg] * s0
        f01 += np.float32(a01) * ws[o, wg] * s1
        f11 += np.float32(a11) * ws[o + 1, wg] * s1
        f21 += np.float32(a21) * ws[o + 2, wg] * s1
        f31 += np.float32(a31) * ws[o + 3, wg] * s1
    y[t, o], y[t, o + 1], y[t, o + 2], y[t, o + 3] = f00, f10, f20, f30
    y[t + 1, o], y[t + 1, o + 1], y[t + 1, o + 2], y[t + 1, o + 3] = f01, f11, f21, f31


def linear_q8q8(x: np.ndarray, wq: np.ndarray, ws: np.ndarray, block_bytes: int = 1 << 19,
                out: np.ndarray | None = None) -> np.ndarray:
    """x (T,I) f32 quantized per token and block of 32 inputs (as llama.cpp's Q8 activations; one
    block per weight group if groups are not multiples of 32), then the int8 GEMM -> (T,O) float32
    (into `out` if given). Weight blocks of about `block_bytes` (half the L2: docs/tiling.md)."""
    T, I = x.shape
    gs = I // ws.shape[1]
    ab = ACT_BLOCK if gs % ACT_BLOCK == 0 else gs
    xq = np.empty((T, I), np.int8)
    xs = np.empty((T, I // ab), np.float32)
    quantize_rows_i8(xq, xs, np.ascontiguousarray(x, dtype=np.float32))
    y = np.empty((T, wq.shape[0]), np.float32) if out is None else out
    gemm = gemm_q8q8_avx2 if HAS_AVX2 and ab == ACT_BLOCK else gemm_q8q8
    gemm(y, wq, ws, xq, xs, max(4, block_bytes // I // 4 * 4))
    return y


@intrinsic
def tile_dot_4x2(typingctx, w0, w1, w2, w3, x0, x1, s0, s1, b, n):
    """For four int8 weight rows w_r and two int8 token rows x_c whose scales s_c hold one value per
    ACT_BLOCK inputs: sum over blocks k of [b, b+n) (b, n multiples of ACT_BLOCK) of
    s_c[k] * sum_{i in k} w_r[i] x_c[i]
    -> float32 (w0.x0, w1.x0, w2.x0, w3.x0, w0.x1, w1.x1, w2.x1, w3.x1).
    AVX2 vector code: per block, 16 int8 at a time per row sign-extended to int16 (vpmovsxbw), vpmaddwd
    and vpaddd into int32 lanes, converted and multiplied by the block's scale into f32 lanes."""
    def codegen(context, builder, signature, args):
        i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
        f32 = ir.FloatType()
        v16i8, v16i16, v8i32, v8f32 = (ir.VectorType(i8, 16), ir.VectorType(i16, 16), ir.VectorType(i32, 8),
                                       ir.VectorType(f32, 8))
        b, n = (builder.sext(v, i64) if v.type.width < 64 else v for v in args[8:10])
        data = [context.make_array(ty)(context, builder, val).data for ty, val in zip(signature.args[:8], args[:8])]
        rows = [builder.gep(p, [b]) for p in data[:6]]
        shift = ir.Constant(i64, ACT_BLOCK.bit_length() - 1)
        scales = [builder.gep(p, [builder.ashr(b, shift)]) for p in data[6:8]]
        pmadd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                               "llvm.x86.avx2.pmadd.wd")
        zero = ir.Constant(v8f32, None)
        fast = ("fast",)
        entry = builder.basic_block
        loop = builder.append_basic_block("tile.loop")
        done = builder.append_basic_block("tile.done")
        builder.cbranch(builder.icmp_signed(">", n, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        accs = [builder.phi(v8f32) for _ in range(8)]

        def load16(p, off):
            q = builder.bitcast(builder.gep(p, [builder.add(i, ir.Constant(i64, off))]), v16i8.as_pointer())
            return builder.sext(builder.load(q, align=1), v16i16)

        parts = [[load16(p, off) for p in rows] for off in range(0, ACT_BLOCK, 16)]
        k = builder.ashr(i, shift)
        sv = []
        for p in scales:
            sc = builder.load(builder.gep(p, [k]))
            one = builder.insert_element(ir.Constant(v8f32, ir.Undefined), sc, ir.Constant(i32, 0))
            sv.append(builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, 8), [0] * 8)))
        sums = []
        for c in range(2):
            for r in range(4):
                isum = builder.call(pmadd, [parts[0][r], parts[0][4 + c]])
                for v in parts[1:]:
                    isum = builder.add(isum, builder.call(pmadd, [v[r], v[4 + c]]))
                f = builder.fmul(builder.sitofp(isum, v8f32), sv[c], flags=fast)
                sums.append(builder.fadd(accs[4 * c + r], f, flags=fast))
        i_next = builder.add(i, ir.Constant(i64, ACT_BLOCK))
        i.add_incoming(ir.Constant(i64, 0), entry)
        i.add_incoming(i_next, loop)
        for acc, v in zip(accs, sums):
            acc.add_incoming(zero, entry)
            acc.add_incoming(v, loop)
        builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
        builder.position_at_end(done)
        finals = []
        for v in sums:
            f = builder.phi(v8f32)
            f.add_incoming(zero, entry)
            f.add_incoming(v, loop)
            finals.append(f)
        outs = []
        for f in finals:
            lanes = [builder.extract_element(f, ir.Constant(i32, j)) for j in range(8)]
            while len(lanes) > 1:
                lanes = [builder.fadd(lanes[j], lanes[j + 1], flags=fast) for j in range(0, len(lanes), 2)]
            outs.append(lanes[0])
        return context.make_tuple(builder, signature.return_type, outs)

    return types.UniTuple(types.float32, 8)(w0, w1, w2, w3, x0, x1, s0, s1, b, n), codegen


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def gemm_q8q8_avx2(y, wq, ws, xq, xs, block_rows):
    """gemm_q8q8's contract, AVX2 only, activation blocks of ACT_BLOCK (xs (T, I/ACT_BLOCK)), weight
    groups holding whole blocks: the 4x2 tiles run tile_dot_4x2."""
    O, I = wq.shape
    T = xq.shape[0]
    G = ws.shape[1]
    gs = I // G
    GX = xs.shape[1]
    for blk in prange((O + block_rows - 1) // block_rows):
        r0 = blk * block_rows
        r1 = min(O, r0 + block_rows)
        for t in range(0, T - 1, 2):
            o = r0
            while o + 4 <= r1:
                f00 = f10 = f20 = f30 = f01 = f11 = f21 = f31 = np.float32(0.0)
                for g in range(G):
                    a00, a10, a20, a30, a01, a11, a21, a31 = tile_dot_4x2(
                        wq[o], wq[o + 1], wq[o + 2], wq[o + 3], xq[t], xq[t + 1], xs[t], xs[t + 1], g * gs, gs)
                    f00 += a00 * ws[o, g]
                    f10 += a10 * ws[o + 1, g]
                    f20 += a20 * ws[o + 2, g]
                    f30 += a30 * ws[o + 3, g]
                    f01 += a01 * ws[o, g]
                    f11 += a11 * ws[o + 1, g]
                    f21 += a21 * ws[o + 2, g]
                    f31 += a31 * ws[o + 3, g]
                y[t, o], y[t, o + 1], y[t, o + 2], y[t, o + 3] = f00, f10, f20, f30
                y[t + 1, o], y[t + 1, o + 1], y[t + 1, o + 2], y[t + 1, o + 3] = f01, f11, f21, f31
                o += 4
            for oo in range(o, r1):
                for tt in range(t, t + 2):
                    y[tt, oo] = _dot_q8q8(wq, ws, xq, xs, oo, tt, GX, I // GX, gs)
        if T % 2:
            for oo in range(r0, r1):
                y[T - 1, oo] = _dot_q8q8(wq, ws, xq, xs, oo, T - 1, GX, I // GX, gs)
