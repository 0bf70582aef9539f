"""int8 x int8 products for prefill: activations quantized per token and weight group, int32 sums.

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
    """(wq (O,I) int8 * ws (O,G)) @ (xq (T,I) int8 * xs (T,G))^T -> y (T,O), int32 sums per group.

    Threads take blocks of `block_rows` weight rows (size them to half the L2: the block stays in
    cache while every token passes over it); inside a block, tiles of 4 rows x 2 tokens."""
    O, I = wq.shape
    T = xq.shape[0]
    G = ws.shape[1]
    gs = I // G
    for blk in prange((O + block_rows - 1) // block_rows):
        r0 = blk * block_rows
        r1 = min(O, r0 + block_rows)
        for t in range(0, T - 1, 2):
            o = r0
            while o + 4 <= r1:
                _tile_4x2(y, wq, ws, xq, xs, o, t, G, gs)
                o += 4
            for oo in range(o, r1):
                for tt in range(t, t + 2):
                    y[tt, oo] = _dot_q8q8(wq, ws, xq, xs, oo, tt, G, gs)
        if T % 2:
            for oo in range(r0, r1):
                y[T - 1, oo] = _dot_q8q8(wq, ws, xq, xs, oo, T - 1, G, gs)


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _dot_q8q8(wq, ws, xq, xs, o, t, G, gs):
    """y[t, o] of gemm_q8q8, alone"""
    w = wq[o]
    x = xq[t]
    acc = np.float32(0.0)
    for g in range(G):
        b = g * gs
        a = np.int32(0)
        for i in range(gs):
            a = madd_i32(a, w[b + i], x[b + i])
        acc += np.float32(a) * ws[o, g] * xs[t, g]
    return acc


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _tile_4x2(y, wq, ws, xq, xs, o, t, G, gs):
    """y[t:t+2, o:o+4] of gemm_q8q8: 8 int32 sums sharing each load of 4 weight and 2 token rows"""
    w0, w1, w2, w3 = wq[o], wq[o + 1], wq[o + 2], wq[o + 3]
    x0, x1 = xq[t], xq[t + 1]
    f00 = f10 = f20 = f30 = f01 = f11 = f21 = f31 = np.float32(0.0)
    for g in range(G):
        b = g * gs
        a00 = a10 = a20 = a30 = a01 = a11 = a21 = a31 = np.int32(0)
        for ii in range(gs):
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
        f00 += np.float32(a00) * ws[o, g] * s0
        f10 += np.float32(a10) * ws[o + 1, g] * s0
        f20 += np.float32(a20) * ws[o + 2, g] * s0
        f30 += np.float32(a30) * ws[o + 3, g] * s0
        f01 += np.float32(a01) * ws[o, g] * s1
        f11 += np.float32(a11) * ws[o + 1, g] * s1
        f21 += np.float32(a21) * ws[o + 2, g] * s1
        f31 += np.float32(a31) * ws[o + 3, g] * s1
    y[t, o], y[t, o + 1], y[t, o + 2], y[t, o + 3] = f00, f10, f20, f30
    y[t + 1, o], y[t + 1, o + 1], y[t + 1, o + 2], y[t + 1, o + 3] = f01, f11, f21, f31


def linear_q8q8(x: np.ndarray, wq: np.ndarray, ws: np.ndarray, block_bytes: int = 1 << 19,
                out: np.ndarray | None = None) -> np.ndarray:
    """x (T,I) f32 quantized per token and weight group, then the int8 GEMM -> (T,O) float32 (into
    `out` if given). Weight blocks of about `block_bytes` (half the L2: docs/tiling.md)."""
    T, I = x.shape
    G = ws.shape[1]
    xq = np.empty((T, I), np.int8)
    xs = np.empty((T, G), np.float32)
    quantize_rows_i8(xq, xs, np.ascontiguousarray(x, dtype=np.float32))
    y = np.empty((T, wq.shape[0]), np.float32) if out is None else out
    gemm = gemm_q8q8_avx2 if HAS_AVX2 and (I // G) % 16 == 0 else gemm_q8q8
    gemm(y, wq, ws, xq, xs, max(4, block_bytes // I // 4 * 4))
    return y


@intrinsic
def tile_dot_4x2(typingctx, w0, w1, w2, w3, x0, x1, b, n):
    """int32 sums over i in [b, b+n), n a multiple of 16, of w_r[i] * x_c[i] for four int8 weight
    rows and two int8 token rows -> (w0.x0, w1.x0, w2.x0, w3.x0, w0.x1, w1.x1, w2.x1, w3.x1).
    AVX2 vector code: 16 int8 loaded and sign-extended to int16 per row, vpmaddwd, vpaddd into eight
    vector accumulators, summed across lanes at the end."""
    def codegen(context, builder, signature, args):
        i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
        v16i8, v16i16, v8i32 = ir.VectorType(i8, 16), ir.VectorType(i16, 16), ir.VectorType(i32, 8)
        b, n = (builder.sext(v, i64) if v.type.width < 64 else v for v in args[6:8])
        rows = [builder.gep(context.make_array(ty)(context, builder, val).data, [b])
                for ty, val in zip(signature.args[:6], args[:6])]
        pmadd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                               "llvm.x86.avx2.pmadd.wd")
        hsum = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [v8i32]),
                                              "llvm.vector.reduce.add.v8i32")
        zero = ir.Constant(v8i32, None)
        entry = builder.basic_block
        loop = builder.append_basic_block("tile.loop")
        done = builder.append_basic_block("tile.done")
        builder.cbranch(builder.icmp_signed(">", n, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        accs = [builder.phi(v8i32) for _ in range(8)]
        v = [builder.sext(builder.load(builder.bitcast(builder.gep(p, [i]), v16i8.as_pointer()), align=1), v16i16)
             for p in rows]
        sums = [builder.add(accs[4 * c + r], builder.call(pmadd, [v[r], v[4 + c]])) for c in range(2) for r in range(4)]
        i_next = builder.add(i, ir.Constant(i64, 16))
        i.add_incoming(ir.Constant(i64, 0), entry)
        i.add_incoming(i_next, loop)
        for acc, s in zip(accs, sums):
            acc.add_incoming(zero, entry)
            acc.add_incoming(s, loop)
        builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
        builder.position_at_end(done)
        finals = []
        for s in sums:
            f = builder.phi(v8i32)
            f.add_incoming(zero, entry)
            f.add_incoming(s, loop)
            finals.append(f)
        return context.make_tuple(builder, signature.return_type, [builder.call(hsum, [f]) for f in finals])

    return types.UniTuple(types.int32, 8)(w0, w1, w2, w3, x0, x1, b, n), codegen


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def gemm_q8q8_avx2(y, wq, ws, xq, xs, block_rows):
    """gemm_q8q8's contract, AVX2 only, (I // G) % 16 == 0: the 4x2 tiles run tile_dot_4x2."""
    O, I = wq.shape
    T = xq.shape[0]
    G = ws.shape[1]
    gs = I // G
    for blk in prange((O + block_rows - 1) // block_rows):
        r0 = blk * block_rows
        r1 = min(O, r0 + block_rows)
        for t in range(0, T - 1, 2):
            o = r0
            while o + 4 <= r1:
                f00 = f10 = f20 = f30 = f01 = f11 = f21 = f31 = np.float32(0.0)
                for g in range(G):
                    a00, a10, a20, a30, a01, a11, a21, a31 = tile_dot_4x2(
                        wq[o], wq[o + 1], wq[o + 2], wq[o + 3], xq[t], xq[t + 1], g * gs, gs)
                    s0, s1 = xs[t, g], xs[t + 1, g]
                    f00 += np.float32(a00) * ws[o, g] * s0
                    f10 += np.float32(a10) * ws[o + 1, g] * s0
                    f20 += np.float32(a20) * ws[o + 2, g] * s0
                    f30 += np.float32(a30) * ws[o + 3, g] * s0
                    f01 += np.float32(a01) * ws[o, g] * s1
                    f11 += np.float32(a11) * ws[o + 1, g] * s1
                    f21 += np.float32(a21) * ws[o + 2, g] * s1
                    f31 += np.float32(a31) * ws[o + 3, g] * s1
                y[t, o], y[t, o + 1], y[t, o + 2], y[t, o + 3] = f00, f10, f20, f30
                y[t + 1, o], y[t + 1, o + 1], y[t + 1, o + 2], y[t + 1, o + 3] = f01, f11, f21, f31
                o += 4
            for oo in range(o, r1):
                for tt in range(t, t + 2):
                    y[tt, oo] = _dot_q8q8(wq, ws, xq, xs, oo, tt, G, gs)
        if T % 2:
            for oo in range(r0, r1):
                y[T - 1, oo] = _dot_q8q8(wq, ws, xq, xs, oo, T - 1, G, gs)
