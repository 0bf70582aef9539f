"""int8 x int8 products for prefill: activations quantized per token and block, int32 sums.

    y[t, o] = ws[o, g] * sum over the activation blocks k of weight group g of
              xs[t, k] * (sum over the inputs i of block k of wq[o, i] * xq[t, i])

xq = round(x / xs) with xs = max|x| / 127 per token and block of ACT_BLOCK (32) inputs, llama.cpp's
Q8 activation blocks (coarser scales fail the int8 tolerance on the default model: docs/benchmarks.md).

The layout is what makes it fast. A vector holds 8 tokens: the activations are packed as int16 pairs,
    xp[v, j, l] = (xq[8v + l, 2j], xq[8v + l, 2j + 1])                (an int32 lane of two int16)
and a weight row's pair (wq[o, 2j], wq[o, 2j + 1]), widened to int16 once per tile of 6 rows, is
broadcast, so one vpmaddwd multiplies 2 inputs x 8 tokens and adds them into 8 int32 sums that are
whole per block; converting a block's sums to float costs one vcvtdq2ps and one multiply-add per 8
tokens. (A dot-product tile, one row x one token per vector, pays that per row and token and per 32
inputs: the first version, `tile_dot_4x2`, ran at 0.5-0.7x this.) vpmaddwd issues once a cycle on
Zen 3: 16 multiply-adds, the f32 FMA peak; one thread runs ~15 a cycle. numba itself cannot emit it
(it widens integers to 64 bits, and LLVM vectorizes a tile of int8 dot products as vpmovsxbd +
vpmulld), so the tile is explicit vector IR (`panel_tile_6x2`). With VNNI (Xeon) vpdpwssd would fuse
the multiply-add and the add: not written yet (no machine here to test it on).

A token's result depends on its own activations and the weights only: every lane sums its blocks in
the same order, so a row of y is the same bits in any batch (tests/test_kernels_quant.py).
"""
import numba
import numpy as np
from llvmlite import binding, ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

HAS_AVX2 = "+avx2" in binding.get_host_cpu_features().flatten().split(",")
ACT_BLOCK = 32   # inputs per activation scale (the panel takes 16 pairs a block)
PANEL_ROWS = 6      # weight rows per tile: 6 rows x 2 token vectors = 12 int32 accumulators (+ 2 + 1)
PANEL_VECS = 2      # token vectors (8 tokens each) per tile


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def act_scale(x, t, i0):
    """The int8 scale of inputs i0 .. i0+ACT_BLOCK-1 of token t of x (T, I): max|x| / 127, 1 for an
    all-zero block (every int8-activation path quantizes with it: the same values everywhere)."""
    m = np.float32(0.0)
    for i in range(ACT_BLOCK):
        m = max(m, abs(x[t, i0 + i]))
    return m / np.float32(127.0) if m > 0 else np.float32(1.0)


@njit(fastmath=True, cache=True, nogil=True)
def quantize_pack_i8(xp, xsp, xb, x):
    """x (T, I) f32 -> xp (V, I/2, 8, 2) int16: token 8v + l's input i at [v, i // 2, l, i % 2], quantized
    per token and block of ACT_BLOCK inputs (xq = rint(x / s), s = max|x| / 127, 1 for an all-zero
    block); xsp (V, I/32, 8) f32 the blocks' scales; xb (V, I/32, 8) f32 the blocks' sums s * sum(xq)
    (what uint4's offsets multiply). Lanes past T hold zeros (their scales 1)."""
    T, I = x.shape
    V = xp.shape[0]
    NB = I // ACT_BLOCK
    for v in range(V):
        for l in range(8):
            t = 8 * v + l
            if t >= T:
                for j in range(I // 2):
                    xp[v, j, l, 0] = 0
                    xp[v, j, l, 1] = 0
                for b in range(NB):
                    xsp[v, b, l] = np.float32(1.0)
                    xb[v, b, l] = np.float32(0.0)
                continue
            for b in range(NB):
                i0 = b * ACT_BLOCK
                s = act_scale(x, t, i0)
                xsp[v, b, l] = s
                inv = np.float32(1.0) / s
                total = 0
                for i in range(ACT_BLOCK):
                    q = np.int16(np.int8(np.rint(x[t, i0 + i] * inv)))
                    xp[v, (i0 + i) // 2, l, (i0 + i) % 2] = q
                    total += q
                xb[v, b, l] = s * np.float32(total)


def _panel_codegen(NR, scaled=False, offsets=False):
    """f (PANEL_ROWS * NR * 8) f32 <- per row r and token vector c: sum over nb blocks of
    xs[c, block] * (int32 sums over the block's 16 pairs of vpmaddwd(w pair of row r, xp[c, pair])).
    `scaled`: each block's term also times its row's weight scale k[r * k_stride + block // gb] (a
    weight group of gb blocks), and with `offsets` plus k[r * k_stride + G + block // gb] * xb[c, block]
    (uint4: the offset times the block's sum of activations): the whole row in one pass, for weight
    groups as small as a block (4-bit rows), where a call per group would cost more than its products."""
    MR = PANEL_ROWS

    def codegen(context, builder, signature, args):
        i16, i32, i64, f32 = ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
        v8i32, v16i16, v8f32 = ir.VectorType(i32, 8), ir.VectorType(i16, 16), ir.VectorType(f32, 8)
        f_arr, w_arr, x_arr, s_arr, b_arr, k_arr = (context.make_array(ty)(context, builder, val).data
                                                    for ty, val in zip(signature.args[:6], args[:6]))
        w_off, P, x_off0, x_off1, s_off0, s_off1, nb, k_stride, G, gb = (
            builder.sext(v, i64) if v.type.width < 64 else v for v in args[6:16])
        x_offs, s_offs = [x_off0, x_off1][:NR], [s_off0, s_off1][:NR]
        pmadd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                               "llvm.x86.avx2.pmadd.wd")
        zero_i, zero_f = ir.Constant(v8i32, None), ir.Constant(v8f32, None)
        c8, c16 = ir.Constant(i64, 8), ir.Constant(i64, 16)
        fast = ("fast",)
        w_rows = [builder.add(w_off, builder.mul(P, ir.Constant(i64, r))) for r in range(MR)]

        def vload(ptr, index, ty):
            return builder.load(builder.bitcast(builder.gep(ptr, [index]), ty.as_pointer()), align=4)

        def splat(ptr, index):
            one = builder.insert_element(ir.Constant(v8f32, ir.Undefined), builder.load(builder.gep(ptr, [index])),
                                         ir.Constant(i32, 0))
            return builder.shuffle_vector(one, one, ir.Constant(v8i32, [0] * 8))

        def close_loop(counter, phis, news, zero, before, body_end, limit, exit_block):
            """counter += 1 and the accumulators' phis: from zeros on entry (from `before`), from `news`
            around the loop (from `body_end`), whose header is the counter's block; loop while < limit."""
            nxt = builder.add(counter, ir.Constant(i64, 1))
            counter.add_incoming(ir.Constant(i64, 0), before)
            counter.add_incoming(nxt, body_end)
            for phi, new in zip(phis, news):
                phi.add_incoming(zero, before)
                phi.add_incoming(new, body_end)
            builder.cbranch(builder.icmp_signed("<", nxt, limit), counter.parent, exit_block)

        entry = builder.basic_block
        blocks = builder.append_basic_block("panel.blocks")
        pairs = builder.append_basic_block("panel.pairs")
        block_end = builder.append_basic_block("panel.block_end")
        done = builder.append_basic_block("panel.done")
        builder.cbranch(builder.icmp_signed(">", nb, ir.Constant(i64, 0)), blocks, done)

        # for each block: 16 pair steps into int32 accumulators, then one conversion per accumulator
        builder.position_at_end(blocks)
        b = builder.phi(i64)
        facc = [builder.phi(v8f32) for _ in range(MR * NR)]
        builder.branch(pairs)
        builder.position_at_end(pairs)
        j = builder.phi(i64)
        iacc = [builder.phi(v8i32) for _ in range(MR * NR)]
        jj = builder.add(builder.mul(b, c16), j)          # pair index from the start of the range
        xv = [builder.bitcast(vload(x_arr, builder.add(xo, builder.mul(jj, c8)), v8i32), v16i16)
              for xo in x_offs]
        new_iacc = []
        for r in range(MR):
            wp = builder.load(builder.gep(w_arr, [builder.add(w_rows[r], jj)]), align=4)
            one = builder.insert_element(ir.Constant(v8i32, ir.Undefined), wp, ir.Constant(i32, 0))
            wv = builder.bitcast(builder.shuffle_vector(one, one, ir.Constant(v8i32, [0] * 8)), v16i16)
            for c in range(NR):
                new_iacc.append(builder.add(iacc[r * NR + c], builder.call(pmadd, [wv, xv[c]])))
        close_loop(j, iacc, new_iacc, zero_i, blocks, pairs, c16, block_end)

        builder.position_at_end(block_end)
        s_idx = [builder.add(so, builder.mul(b, c8)) for so in s_offs]
        sv = [vload(s_arr, i, v8f32) for i in s_idx]
        if scaled:
            g = builder.udiv(b, gb)
            k_rows = [builder.add(builder.mul(k_stride, ir.Constant(i64, r)), g) for r in range(MR)]
            wsv = [splat(k_arr, kr) for kr in k_rows]
            if offsets:
                xbv = [vload(b_arr, i, v8f32) for i in s_idx]
                ofv = [splat(k_arr, builder.add(kr, G)) for kr in k_rows]
        new_facc = []
        for r in range(MR):
            for c in range(NR):
                conv = builder.sitofp(new_iacc[r * NR + c], v8f32)
                scale = builder.fmul(sv[c], wsv[r], flags=fast) if scaled else sv[c]
                term = builder.fmul(conv, scale, flags=fast)
                if scaled and offsets:
                    term = builder.fadd(term, builder.fmul(ofv[r], xbv[c], flags=fast), flags=fast)
                new_facc.append(builder.fadd(facc[r * NR + c], term, flags=fast))
        close_loop(b, facc, new_facc, zero_f, entry, block_end, nb, done)

        builder.position_at_end(done)
        results = [builder.phi(v8f32) for _ in range(MR * NR)]
        for k, res in enumerate(results):
            res.add_incoming(zero_f, entry)
            res.add_incoming(new_facc[k], block_end)
            ptr = builder.bitcast(builder.gep(f_arr, [ir.Constant(i64, 8 * k)]), v8f32.as_pointer())
            builder.store(res, ptr, align=4)
        return context.get_dummy_value()
    return codegen


def _panel_intrinsic(NR, scaled=False, offsets=False):
    @intrinsic
    def panel_tile(typingctx, f, w, x, xs, xb, k, w_off, P, x_off0, x_off1, s_off0, s_off1, nb, k_stride, G, gb):
        sig = types.none(f, w, x, xs, xb, k, w_off, P, x_off0, x_off1, s_off0, s_off1, nb, k_stride, G, gb)
        return sig, _panel_codegen(NR, scaled, offsets)
    return panel_tile


panel_tile_6x2 = _panel_intrinsic(2)
panel_tile_6x1 = _panel_intrinsic(1)
scaled_tile_6x2, scaled_tile_6x1 = _panel_intrinsic(2, True), _panel_intrinsic(1, True)   # int4
offset_tile_6x2, offset_tile_6x1 = _panel_intrinsic(2, True, True), _panel_intrinsic(1, True, True)   # uint4


@njit(fastmath=True, cache=True, nogil=True)
def panel_rows(y, wq, ws, xp, xsp, T, o0):
    """y[t, o0 + r] = (wq (R, I) int8 * ws (R, G)) row r times token t, for every row of wq and t < T, the
    activations packed by quantize_pack_i8. One tile of PANEL_ROWS rows at a time: its rows widened to
    int16 and every token passed over them in tiles of 16 tokens. Serial: callers spread row blocks or
    chunks."""
    R, I = wq.shape
    w16 = np.empty(PANEL_ROWS * I, np.int16)              # the tile's rows, widened
    f = np.empty(PANEL_ROWS * PANEL_VECS * 8, np.float32)  # a tile's float sums
    G = ws.shape[1]
    P = I // 2
    gp = P // G                                   # pairs per weight group
    gb = (I // G) // ACT_BLOCK                    # activation blocks per weight group
    NB = I // ACT_BLOCK
    V = xp.shape[0]
    xflat = xp.reshape(-1).view(np.int32)
    sflat = xsp.reshape(-1)
    w32 = w16.view(np.int32)
    for rt in range(0, R, PANEL_ROWS):
        nr = min(PANEL_ROWS, R - rt)
        for r in range(PANEL_ROWS):               # rows past R are zeros (their results are dropped)
            for i in range(I):
                w16[r * I + i] = wq[rt + r, i] if r < nr else 0
        for v in range(0, V, PANEL_VECS):
            nv = min(PANEL_VECS, V - v)
            for g in range(G):
                x0 = (v * P + g * gp) * 8
                s0 = (v * NB + g * gb) * 8
                if nv == 2:
                    panel_tile_6x2(f, w32, xflat, sflat, sflat, sflat, g * gp, P, x0, x0 + P * 8, s0, s0 + NB * 8,
                                   gb, 0, 0, 1)
                else:
                    panel_tile_6x1(f, w32, xflat, sflat, sflat, sflat, g * gp, P, x0, x0, s0, s0, gb, 0, 0, 1)
                for r in range(nr):
                    sc = ws[rt + r, g]
                    o = o0 + rt + r
                    for c in range(nv):
                        for l in range(8):
                            t = (v + c) * 8 + l
                            if t < T:
                                val = f[(r * nv + c) * 8 + l] * sc
                                if g == 0:
                                    y[t, o] = val
                                else:
                                    y[t, o] += val


def fill_tile(w16, kt, p, ks, r0, nr):
    """A tile of packed 4-bit rows p[r0:r0 + nr] widened to int16 in input order (FORMAT §5: input 2m in
    the low nibble of byte m) into w16, their scales (and offsets) into kt, zeros past nr rows: two's
    complement -8..7 for ks (R, G) (int4), unsigned 0..15 for ks (R, 2, G) (uint4: scales, offsets)."""
    raise NotImplementedError("compiled code only")


@overload(fill_tile, inline="always")
def _fill_tile(w16, kt, p, ks, r0, nr):
    unsigned = ks.ndim == 3

    def fill(w16, kt, p, ks, r0, nr):
        B = p.shape[1]
        K = kt.size // PANEL_ROWS
        flat = ks.reshape((ks.shape[0], K))
        for r in range(PANEL_ROWS):
            for m in range(B):
                v = np.int32(p[r0 + r, m]) if r < nr else 0
                lo, hi = v & 15, v >> 4
                if not unsigned:
                    lo, hi = (lo ^ 8) - 8, (hi ^ 8) - 8
                w16[r * 2 * B + 2 * m] = lo
                w16[r * 2 * B + 2 * m + 1] = hi
            for k in range(K):
                kt[r * K + k] = flat[r0 + r, k] if r < nr else 0
    return fill


def packed_tile(f, w32, xflat, sflat, bflat, kt, P, x0, x1, s0, s1, NB, G, gb, nv, ks):
    """One scaled panel tile over whole rows: uint4's (with offsets) for ks (R, 2, G), else int4's."""
    raise NotImplementedError("compiled code only")


@overload(packed_tile, inline="always")
def _packed_tile(f, w32, xflat, sflat, bflat, kt, P, x0, x1, s0, s1, NB, G, gb, nv, ks):
    if ks.ndim == 3:
        def uint4(f, w32, xflat, sflat, bflat, kt, P, x0, x1, s0, s1, NB, G, gb, nv, ks):
            if nv == 2:
                offset_tile_6x2(f, w32, xflat, sflat, bflat, kt, 0, P, x0, x1, s0, s1, NB, 2 * G, G, gb)
            else:
                offset_tile_6x1(f, w32, xflat, sflat, bflat, kt, 0, P, x0, x1, s0, s1, NB, 2 * G, G, gb)
        return uint4

    def int4(f, w32, xflat, sflat, bflat, kt, P, x0, x1, s0, s1, NB, G, gb, nv, ks):
        if nv == 2:
            scaled_tile_6x2(f, w32, xflat, sflat, bflat, kt, 0, P, x0, x1, s0, s1, NB, G, G, gb)
        else:
            scaled_tile_6x1(f, w32, xflat, sflat, bflat, kt, 0, P, x0, x1, s0, s1, NB, G, G, gb)
    return int4


@njit(fastmath=True, cache=True, nogil=True)
def panel_rows_packed(y, p, ks, xp, xsp, xb, T, o0):
    """y[t, o0 + r] = packed 4-bit row r of p (R, I/2) with its scales ks (R, G) (int4), or scales and
    offsets ks (R, 2, G) (uint4: w = value * scale + offset), times token t, for every t < T, the
    activations packed by quantize_pack_i8 (xb: their block sums, what offsets multiply). Like
    panel_rows, but the weight scales (and offsets) apply per activation block inside the tile: groups
    of 32 or 64 inputs would otherwise cost a pass over the outputs per group. Each (row, token) is
    summed in one fixed order whatever shares its tile. Serial: callers spread row blocks or chunks."""
    R, I = p.shape[0], 2 * p.shape[1]
    G = ks.shape[-1]
    K = ks.size // R if R else 0
    w16 = np.empty(PANEL_ROWS * I, np.int16)
    kt = np.empty(PANEL_ROWS * K, np.float32)
    f = np.empty(PANEL_ROWS * PANEL_VECS * 8, np.float32)
    P = I // 2
    NB = I // ACT_BLOCK
    gb = NB // G
    V = xp.shape[0]
    xflat = xp.reshape(-1).view(np.int32)
    sflat = xsp.reshape(-1)
    bflat = xb.reshape(-1)
    w32 = w16.view(np.int32)
    for rt in range(0, R, PANEL_ROWS):
        nr = min(PANEL_ROWS, R - rt)
        fill_tile(w16, kt, p, ks, rt, nr)
        for v in range(0, V, PANEL_VECS):
            nv = min(PANEL_VECS, V - v)
            x0, s0 = v * P * 8, v * NB * 8
            packed_tile(f, w32, xflat, sflat, bflat, kt, P, x0, x0 + (nv - 1) * P * 8, s0, s0 + (nv - 1) * NB * 8,
                        NB, G, gb, nv, ks)
            for r in range(nr):
                o = o0 + rt + r
                for c in range(nv):
                    for l in range(8):
                        t = (v + c) * 8 + l
                        if t < T:
                            y[t, o] = f[(r * nv + c) * 8 + l]


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def gemm_packed(y, p, ks, xp, xsp, xb, T, block_rows):
    """gemm_panel for packed 4-bit rows (panel_rows_packed): threads take blocks of `block_rows` rows."""
    O = p.shape[0]
    for blk in prange((O + block_rows - 1) // block_rows):
        r0 = blk * block_rows
        r1 = min(O, r0 + block_rows)
        panel_rows_packed(y, p[r0:r1], ks[r0:r1], xp, xsp, xb, T, r0)


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def gemm_panel(y, wq, ws, xp, xsp, T, block_rows):
    """y (T, O) = (wq (O, I) int8 * ws (O, G)) @ (activations packed by quantize_pack_i8)^T: threads take
    blocks of `block_rows` weight rows (a multiple of PANEL_ROWS) through panel_rows."""
    O = wq.shape[0]
    for blk in prange((O + block_rows - 1) // block_rows):
        r0 = blk * block_rows
        r1 = min(O, r0 + block_rows)
        panel_rows(y, wq[r0:r1], ws[r0:r1], xp, xsp, T, r0)


def pack_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (T, I) f32 -> (xp, xsp, xb) for gemm_panel / panel_rows / panel_rows_packed (quantize_pack_i8)."""
    T, I = x.shape
    V = (T + 7) // 8
    xp = np.empty((V, I // 2, 8, 2), np.int16)
    xsp = np.empty((V, I // ACT_BLOCK, 8), np.float32)
    xb = np.empty((V, I // ACT_BLOCK, 8), np.float32)
    quantize_pack_i8(xp, xsp, xb, np.ascontiguousarray(x, dtype=np.float32))
    return xp, xsp, xb


def panel_fits(n_inputs: int, group: int) -> bool:
    """Can the panel kernel take rows of n_inputs inputs with one weight scale per `group` inputs?"""
    return HAS_AVX2 and n_inputs > 0 and group % ACT_BLOCK == 0 and n_inputs % group == 0


def linear_q8q8(x: np.ndarray, wq: np.ndarray, ws: np.ndarray, block_bytes: int = 1 << 16,
                out: np.ndarray | None = None) -> np.ndarray:
    """x (T, I) f32 quantized per token and block of ACT_BLOCK inputs, times int8 weights (O, I) with
    scales ws (O, G) -> (T, O) float32 (into `out` if given); the shapes must fit (`panel_fits`).
    Threads take blocks of weight rows of about `block_bytes` as int16 (64 KB, an eighth of Zen 3's
    L2, measured best: docs/benchmarks.md), every thread the same number of blocks."""
    T, I = x.shape
    O = wq.shape[0]
    _check_fits(I, ws.shape[1])
    y = np.empty((T, O), np.float32) if out is None else out
    xp, xsp, _ = pack_activations(x)
    gemm_panel(y, wq, ws, xp, xsp, T, _block_rows(O, I, block_bytes))
    return y


def _check_fits(I: int, G: int) -> None:
    """ValueError unless the panel takes rows of I inputs in G scale groups (`panel_fits`)."""
    if not panel_fits(I, I // G):
        raise ValueError(f"the int8 GEMM takes groups of whole {ACT_BLOCK}-input blocks on AVX2 (I={I}, G={G})")


def _block_rows(O: int, I: int, block_bytes: int) -> int:
    """Rows per thread task: blocks of about block_bytes as int16, every thread the same number."""
    tiles = -(-O // PANEL_ROWS)
    blocks = max(1, min(tiles, -(-2 * I * O // block_bytes)))
    threads = numba.get_num_threads()
    blocks = min(tiles, -(-blocks // threads) * threads)
    return -(-tiles // blocks) * PANEL_ROWS


def linear_packed(x: np.ndarray, p: np.ndarray, ks: np.ndarray, block_bytes: int = 1 << 16,
                  out: np.ndarray | None = None) -> np.ndarray:
    """x (T, I) f32 quantized as for linear_q8q8, times packed 4-bit rows p (O, I/2) with scales ks (O, G)
    (int4) or scales and offsets (O, 2, G) (uint4) -> (T, O) float32 (into `out` if given): the int8
    panel with the nibbles widened per tile (W4A8, as llama.cpp's Q4_1 x Q8_1); shapes as `panel_fits`."""
    T, I = x.shape
    O = p.shape[0]
    _check_fits(I, ks.shape[-1])
    y = np.empty((T, O), np.float32) if out is None else out
    xp, xsp, xb = pack_activations(x)
    gemm_packed(y, p, np.ascontiguousarray(ks, dtype=np.float32), xp, xsp, xb, T, _block_rows(O, I, block_bytes))
    return y
