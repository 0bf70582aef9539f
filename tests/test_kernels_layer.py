"""The fused decode path (kernels.layer via kernels.decode) against the readable forward pass."""
import numpy as np
import pytest

from tinyqmoe.formats.checkpoint import MemoryCheckpoint, expected_tensors
from tinyqmoe.kernels.decode import FusedDecode
from tinyqmoe.kernels.rowdot_a16 import A16, takes_a16
from tinyqmoe.model.config import PRESETS
from tinyqmoe.model.forward import forward
from tinyqmoe.model.state import RunState
from tinyqmoe.weights.resident import from_checkpoint

IDS = [5, 17, 200, 3, 99, 42, 7, 250, 11, 64, 128, 1, 77, 150, 33, 290, 8, 8, 8, 19]
# Two implementations of the forward pass agree to float rounding; where rows with one scale multiply
# int16 tokens (kernels/rowdot_a16.py, A16 hosts), an ulp between them can move one activation by one
# int16 step (max|x| / 32767) and every output of that linear with it: to ~1e-4 of the largest value
AGREE = 1e-3 if A16 else 1e-4


def assert_within_a16_rounding(y, x, weights, atol):
    """y (T, O) is x (T, I) @ weights (O, I).T within the error of rounding each token to int16 steps of
    max|x_t| / 32767 (half a step an input: sum |w| x step / 2) plus float rounding (atol)."""
    ref = x.astype(np.float64) @ np.asarray(weights, np.float64).T
    step = np.abs(x).max(axis=1, keepdims=True).astype(np.float64) / 32767
    bound = step / 2 * np.abs(weights).sum(axis=1)[None, :] * (1 + 1e-6) + atol
    assert np.all(np.abs(y - ref) <= bound), np.abs(y - ref).max()


def random_weights(group, tie, seed=0):
    """int8 weights of a random tiny Llama (GQA 4/2 heads) whose logits are far from zero."""
    import dataclasses

    cfg = dataclasses.replace(PRESETS["tiny"], tie_embeddings=tie)
    return cfg, from_checkpoint(MemoryCheckpoint(cfg, random_tensors(cfg, seed)), "int8", group)


def random_tensors(cfg, seed):
    """float32 tensors of a random Llama of config `cfg`: norms near 1, weights of std 0.08."""
    rng = np.random.default_rng(seed)
    return {name: ((1.0 + 0.1 * rng.standard_normal(shape)) if len(shape) == 1
                   else 0.08 * rng.standard_normal(shape)).astype(np.float32)
            for name, shape in expected_tensors(cfg).items()}


@pytest.mark.parametrize("group, tie", [(None, False), (32, True)])
def test_fused_decode_equals_forward(group, tie):
    cfg, w = random_weights(group, tie)
    fused = FusedDecode(w, cfg)
    s_ref, s_fast = RunState(cfg, capacity=len(IDS)), RunState(cfg, capacity=len(IDS))
    for token in IDS:
        ref = forward(w, s_ref, [token])
        fast = fused.step(s_fast, [token])
        np.testing.assert_allclose(fast, ref, rtol=AGREE, atol=AGREE * np.abs(ref).max())
    assert s_fast.pos == s_ref.pos == len(IDS)
    np.testing.assert_allclose(s_fast.k, s_ref.k, rtol=AGREE, atol=AGREE / 10)   # the KV caches too
    np.testing.assert_allclose(s_fast.v, s_ref.v, rtol=AGREE, atol=AGREE / 10)


def test_fused_short_prompt_then_greedy_tokens_identical():
    cfg, w = random_weights(None, False, seed=1)
    fused = FusedDecode(w, cfg)
    s_ref, s_fast = RunState(cfg, 64), RunState(cfg, 64)
    ref = forward(w, s_ref, IDS[:7], all_logits=True)
    fast = fused.step(s_fast, IDS[:7])
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    t_ref = t_fast = int(ref[-1].argmax())
    ref_stream, fast_stream = [], []
    for _ in range(24):
        ref_stream.append(t_ref)
        fast_stream.append(t_fast)
        t_ref = int(forward(w, s_ref, [t_ref])[0].argmax())
        t_fast = int(fused.step(s_fast, [t_fast])[0].argmax())
    assert fast_stream == ref_stream
    assert len(set(ref_stream)) > 2  # the stream is not a constant


def test_model_decode_path_switch(tmp_path):
    """Model.decode_path = "fused": the same greedy tokens and logits through the public API."""
    import tinyqmoe
    from tinyqmoe.errors import UsageError
    from tinymodels import save_tiny_hf_llama

    pytest.importorskip("transformers")
    d = save_tiny_hf_llama(tmp_path / "tiny", seed=3)
    model = tinyqmoe.load(str(d), cache=False)        # resident int8
    model.tokenizer.stop_ids = frozenset()
    ref_tokens = list(model.stream_ids(IDS[:6], max_new_tokens=20))
    ref_logits = model.logits(IDS[:12])
    model.decode_path = "fused"
    assert list(model.stream_ids(IDS[:6], max_new_tokens=20)) == ref_tokens
    np.testing.assert_allclose(model.logits(IDS[:12]), ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
    with pytest.raises(UsageError):
        model.decode_path = "fast"


def test_int8_prefill_within_int8_tolerance(tmp_path):
    """model.prefill_path = "int8" (int8 activations in long prompts, the default): top-1 agreement
    >= 90% with f32 weights and mean KL < 0.01 nats, as tests/test_engine_reference.py asks of int8
    weights."""
    import tinyqmoe
    from tinymodels import save_tiny_hf_llama

    pytest.importorskip("transformers")
    ids = IDS * 3                                            # 60 rows: the blocked (long-prompt) path
    d = save_tiny_hf_llama(tmp_path / "tiny", seed=4)
    ref = tinyqmoe.load(str(d), weights="f32").logits(ids).astype(np.float64)
    model = tinyqmoe.load(str(d), cache=False)
    assert model.prefill_path == "int8"
    q = model.logits(ids).astype(np.float64)
    model.prefill_path = "f32"
    blas = model.logits(ids)
    assert np.abs(q - blas).max() > 0                        # the int8 path did run
    lp = ref - np.log(np.exp(ref - ref.max(1, keepdims=True)).sum(1, keepdims=True)) - ref.max(1, keepdims=True)
    lq = q - np.log(np.exp(q - q.max(1, keepdims=True)).sum(1, keepdims=True)) - q.max(1, keepdims=True)
    assert np.mean(ref.argmax(1) == q.argmax(1)) >= 0.9
    assert np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)) < 0.01


def uint4_weights(seed=2, group=32, tie=False, embed_qtype="int8"):
    """A random tiny Llama as a default 4-bit container holds it: uint4 linears kept packed with a scale
    and an offset per group (Linear.p, kscale (O, 2, G)), the embedding and LM head `embed_qtype`; and the
    same quantized weights dequantized to float32 (the reference)."""
    import dataclasses

    from tinyqmoe.compress.quant import dequantize, quantize
    from tinyqmoe.weights.linear import Linear
    from tinyqmoe.weights.resident import assemble

    cfg = dataclasses.replace(PRESETS["tiny"], tie_embeddings=tie)
    tensors = random_tensors(cfg, seed)
    embeds = ("model.embed_tokens.weight", "lm_head.weight")
    quant = {n: quantize(t + 0.02, group=group, qtype=embed_qtype if n in embeds else "uint4")[0]   # skewed:
             for n, t in tensors.items() if t.ndim == 2}                                          # offsets matter

    def make(reference):
        def one(name):
            qt = quant[name]
            if reference:
                return Linear(w=dequantize(qt))
            if qt.offset is None:
                return Linear(q=qt.q, scale=qt.scale)
            return Linear(p=np.ascontiguousarray(qt.q), scale=qt.scale, offset=qt.offset)
        return one

    return cfg, assemble(cfg, tensors.__getitem__, make(False)), assemble(cfg, tensors.__getitem__, make(True))


@pytest.mark.parametrize("group, kind", [(None, "int8"), (32, "int8"), (32, "uint4"), (None, "uint4")])
def test_fused_rows_never_depend_on_their_batch(group, kind):
    """Several sequences in one fused call (the server's decode step): each sequence's logits are
    bit for bit those it gets alone, whatever else is in the call and in which tile of tokens it lands,
    and equal the reference forward pass within float rounding. uint4: packed rows with offsets times
    int8 activations (kernels/rowdot.py u4a8_dot_R), an int8 LM head: within float rounding of the
    reference forward on the same packed rows, within the int8 activations' error of float32 weights."""
    if kind == "int8":
        cfg, w = random_weights(group, False, seed=2)
        w_ref = w
    else:
        cfg, w, w_ref = uint4_weights(seed=2, group=group)
        assert w.layers[0].w_down.kscale.shape[1] == 2 and w.lm_head.q is not None
    fused = FusedDecode(w, cfg)
    prompts = [IDS[:3], IDS[5:12], IDS[2:4], IDS[9:18], IDS[1:2]]
    alone, batch, ref = [], [], []
    for p in prompts:
        s = RunState(cfg, 32)
        fused.run([s], [p])
        alone.append(s)
        s2 = RunState(cfg, 32)
        fused.run([s2], [p])
        batch.append(s2)
        s3 = RunState(cfg, 32)
        forward(w_ref, s3, p)
        ref.append(s3)
        if kind == "uint4":   # the reference forward on the same packed rows: the same products
            np.testing.assert_allclose(forward(w, RunState(cfg, 32), p), fused.run([RunState(cfg, 32)], [p])[0],
                                       rtol=1e-4, atol=1e-4)
    for step in range(4):
        tokens = [[(7 * i + 3 * step) % cfg.vocab_size] for i in range(len(prompts))]
        solo = [fused.run([s], [t])[0] for s, t in zip(alone, tokens)]
        # the batch in a different order each step, so every sequence sits in every tile position
        order = np.roll(np.arange(len(prompts)), step)
        together = fused.run([batch[i] for i in order], [tokens[i] for i in order])
        for j, i in enumerate(order):
            assert np.array_equal(together[j], solo[i]), (step, i)
            r = forward(w_ref, ref[i], tokens[i])
            np.testing.assert_allclose(solo[i], r, rtol=0 if kind == "uint4" else 1e-4,
                                       atol=(0.02 if kind == "uint4" else 1e-4) * np.abs(r).max())
    for a, b in zip(alone, batch):
        assert a.pos == b.pos and np.array_equal(a.k, b.k) and np.array_equal(a.v, b.v)


def test_fused_rows_of_odd_shapes_never_depend_on_their_batch():
    """Row counts that are not multiples of the work items or of the 4-row tiles (kernels/layer.py ITEM,
    ROWS): 18 rows per half head (RoPE pairs), a vocabulary of 510; batches of 1 to 6 sequences, so
    tiles of 4 tokens and their 1-3 token tails: each sequence bit for bit as alone, and the reference
    forward pass within rounding."""
    import dataclasses

    cfg = dataclasses.replace(PRESETS["tiny"], n_heads=8, n_kv_heads=4, head_dim=36, vocab_size=510)
    w = from_checkpoint(MemoryCheckpoint(cfg, random_tensors(cfg, 4)), "int8", None)
    fused = FusedDecode(w, cfg)
    prompts = [IDS[:3], IDS[5:12], IDS[2:4], IDS[9:18], IDS[1:2], IDS[4:9]]
    alone, batch = [], []
    for p in prompts:
        for states in (alone, batch):
            states.append(RunState(cfg, 32))
            fused.run([states[-1]], [p])
        ref = forward(w, RunState(cfg, 32), p)
        np.testing.assert_allclose(fused.run([RunState(cfg, 32)], [p])[0], ref, rtol=AGREE,
                                   atol=AGREE * np.abs(ref).max())
    for n in range(1, len(prompts) + 1):
        tokens = [[(5 * i + n) % cfg.vocab_size] for i in range(n)]
        solo = [fused.run([s], [t])[0] for s, t in zip(alone[:n], tokens)]
        together = fused.run(batch[:n], tokens)
        for i in range(n):
            assert np.array_equal(together[i], solo[i]), (n, i)


def test_fused_prompt_rows_and_last_row_agree():
    """A short prompt in one call: all rows' logits, or the last row's only (the LM head for it alone),
    the same numbers; a sequence given twice in one call is refused."""
    from tinyqmoe.errors import UsageError

    cfg, w = random_weights(None, True, seed=5)
    fused = FusedDecode(w, cfg)
    a, b = RunState(cfg, 32), RunState(cfg, 32)
    every = fused.run([a], [IDS[:9]], all_logits=True)[0]
    last = fused.run([b], [IDS[:9]])[0]
    assert every.shape == (9, cfg.vocab_size) and last.shape == (1, cfg.vocab_size)
    assert np.array_equal(every[-1:], last)
    with pytest.raises(UsageError):
        fused.run([a, a], [[1], [2]])


def packed_4bit_weights(seed=6, group=32):
    """A random tiny Llama with 4-bit linears kept packed (Linear.p), and the same values widened to int8."""
    import dataclasses

    from tinyqmoe.compress.quant import quantize, unpack_bits
    from tinyqmoe.weights.linear import Linear
    from tinyqmoe.weights.resident import assemble

    cfg = dataclasses.replace(PRESETS["tiny"], tie_embeddings=True)
    tensors = random_tensors(cfg, seed)
    packed = {n: quantize(t, 4, group)[0] for n, t in tensors.items() if t.ndim == 2}

    def make(widen):
        def one(name):
            qt = packed[name]
            if widen:
                return Linear(q=unpack_bits(qt.q, 4), scale=np.ascontiguousarray(qt.scale, np.float32))
            return Linear(p=np.ascontiguousarray(qt.q), scale=np.ascontiguousarray(qt.scale, np.float32))
        return one

    return cfg, assemble(cfg, tensors.__getitem__, make(False)), assemble(cfg, tensors.__getitem__, make(True))


def test_packed_4bit_row_products_equal_the_widened_ones():
    """kernels/rowdot.py on packed 4-bit rows: bit for bit the products of the same values widened to
    int8, for every tile of tokens and every group size."""
    from tinyqmoe.compress.quant import quantize, unpack_bits
    from tinyqmoe.kernels.layer import matmul_tiles

    rng = np.random.default_rng(7)
    w = rng.standard_normal((40, 192)).astype(np.float32)
    for group in (32, 64, 192):
        qt, _ = quantize(w, 4, group)
        p, scale = np.ascontiguousarray(qt.q), np.ascontiguousarray(qt.scale, np.float32)
        for T in (1, 2, 3, 5, 8, 11):
            x = rng.standard_normal((T, 192)).astype(np.float32)
            y4, y8 = np.empty((T, 40), np.float32), np.empty((T, 40), np.float32)
            matmul_tiles(y4, p, scale, x)
            matmul_tiles(y8, unpack_bits(p, 4), scale, x)
            assert np.array_equal(y4, y8), (group, T)
            weights = unpack_bits(p, 4) * np.repeat(scale, group, axis=1).astype(np.float64)
            ref = x.astype(np.float64) @ weights.T
            if takes_a16(192, 192 // group):
                assert_within_a16_rounding(y4, x, weights, 1e-5 * np.abs(ref).max())
            else:
                np.testing.assert_allclose(y4, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("layout", ["row", "group", "offsets", "int4"])
def test_row_tiles_never_depend_on_their_tile(layout):
    """kernels/rowdot.py: a token's product with a row is the same bits in a tile of any size (1, 2, 3,
    and 4 and 8 with AVX-512) at any place in it, and within float rounding of float64; every int8 row
    form: one scale, group scales, scales and offsets, packed int4."""
    from tinyqmoe.compress.quant import pack_bits
    from tinyqmoe.kernels.layer import matmul_tiles
    from tinyqmoe.kernels.rowdot import TILE

    rng = np.random.default_rng(11)
    O, I = 38, 96                                        # 2 work items of 16 rows and 6: 4-row tiles + 2 rows
    q = rng.integers(-8 if layout == "int4" else -127, 8 if layout == "int4" else 128, (O, I), dtype=np.int8)
    G = 1 if layout == "row" else I // 32
    scale = (0.01 + rng.random((O, G))).astype(np.float32)
    weights = q * np.repeat(scale, I // G, axis=1).astype(np.float64)
    if layout == "offsets":
        offset = (0.1 * rng.standard_normal((O, G))).astype(np.float32)
        weights = weights + np.repeat(offset, I // G, axis=1)
        scale = np.ascontiguousarray(np.stack([scale, offset], axis=1))
    rows = np.ascontiguousarray(pack_bits(q, 4)) if layout == "int4" else q
    T = 2 * TILE + 5                                     # every tile size, remainders included
    x = rng.standard_normal((T, I)).astype(np.float32)
    solo = np.empty((T, O), np.float32)
    for t in range(T):
        matmul_tiles(solo[t:t + 1], rows, scale, x[t:t + 1].copy())
    for n in range(1, T + 1):
        for start in (0, T - n):
            y = np.empty((n, O), np.float32)
            matmul_tiles(y, rows, scale, x[start:start + n].copy())
            assert np.array_equal(y, solo[start:start + n]), (n, start)
    ref = x.astype(np.float64) @ weights.T
    if takes_a16(I, G, layout == "offsets"):
        assert_within_a16_rounding(solo, x, weights, 1e-6 * np.abs(ref).max())
    else:
        np.testing.assert_allclose(solo, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


@pytest.mark.skipif(not A16, reason="W8A16 rows run on hosts with AVX-512 VNNI")
@pytest.mark.parametrize("n", [64, 96, 8192, 8192 + 96, 3 * 8192])
def test_a16_integer_sums_are_exact_past_a_span(n):
    """kernels/rowdot_a16.py: the extreme products (-128 x -32767, one sign over a whole row) summed
    exactly, spans of 8192 inputs included (an int32 lane would overflow without them), for every tile
    size (5 rows: a 4-row x 4-token tile and a row alone), an odd and an even number of 32-input steps;
    quantize_a16's int16 values and scales."""
    from tinyqmoe.kernels.layer import matmul_tiles
    from tinyqmoe.kernels.rowdot_a16 import quantize_a16

    rng = np.random.default_rng(3)
    q = np.full((5, n), -128, np.int8)
    q[1] = rng.integers(-128, 128, n, dtype=np.int8)
    q[2, ::2] = 127
    q[3] = 127
    q[4] = rng.integers(-128, 128, n, dtype=np.int8)
    scale = np.array([[1.0], [0.5], [2.0 ** -20], [3.0], [0.25]], np.float32)
    x = np.full((9, n), -1.0, np.float32)
    x[1:] = rng.standard_normal((8, n)).astype(np.float32)
    xq, xs = np.empty((9, n), np.int16), np.empty(9, np.float32)
    quantize_a16(xq, xs, x)
    assert np.abs(xq).max() == 32767 and np.all(xq[0] == -32767) and xs[0] == np.float32(1 / 32767)
    np.testing.assert_array_equal(xq, np.rint(x * (np.float32(32767) / np.abs(x).max(axis=1, keepdims=True))))
    exact = (xq.astype(np.int64) @ q.astype(np.int64).T).astype(np.float64)   # (9, 5) integer sums
    mult = scale[:, 0][None, :].astype(np.float64) * xs[:, None].astype(np.float64)
    want = exact * mult
    magnitude = (np.abs(xq.astype(np.int64)) @ np.abs(q.astype(np.int64)).T) * mult   # what the lanes held
    for T in (1, 2, 3, 4, 8, 9):
        y = np.empty((T, 5), np.float32)
        matmul_tiles(y, q, scale, x[:T])
        # the float steps after the exact sums: lanes converted to f32 and added (2^-24 of the lanes'
        # magnitude each, a few levels), then two roundings of the scale
        assert np.all(np.abs(y - want[:T]) <= 1e-6 * magnitude[:T]), T


def test_fused_decode_runs_packed_4bit_rows():
    """Packed 4-bit linears (two inputs a byte, unpacked in registers, Linear.p) in the fused path: the
    logits of the same values widened to int8 through the reference forward, within float rounding;
    the reference path multiplies packed rows too; batched rows bit for bit as alone."""
    cfg, w4, w8 = packed_4bit_weights()
    assert w4.layers[0].wqkv.p is not None and w4.layers[0].wqkv.q is None
    assert w4.layers[0].wqkv.nbytes < 0.6 * w8.layers[0].wqkv.nbytes
    f4 = FusedDecode(w4, cfg)
    s4, sr, s4r, sb, sc = (RunState(cfg, 32) for _ in range(5))
    for token in IDS[:10]:
        a = f4.step(s4, [token]).copy()
        b, _ = f4.run([sb, sc], [[token], [(token * 7) % cfg.vocab_size]])
        assert np.array_equal(a, b)
        ref = forward(w8, sr, [token])
        np.testing.assert_allclose(a, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        np.testing.assert_allclose(forward(w4, s4r, [token]), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_uint4_paths_equal_the_dequantized_weights():
    """uint4 everywhere, the LM head and embedding too (`--embed-bits 4`): the fused path and the reference
    forward on packed rows (int8 activations, u4a8 tiles) equal each other within float rounding, and the
    float32 weights within the int8 activations' error, a long prompt too (the same tiles); the same
    values widened to int8 with offsets (the fallback for rows the tiles do not take) within float
    rounding of float32 weights."""
    import dataclasses

    from tinyqmoe.runtime import SERIAL
    from tinyqmoe.weights.linear import Linear

    cfg, w, w_ref = uint4_weights(seed=4, group=32, tie=True, embed_qtype="uint4")
    assert w.lm_head.p is not None and w.embed.offset is not None
    np.testing.assert_allclose(w.embed_rows(np.array(IDS[:4])), w_ref.embed_rows(np.array(IDS[:4])), atol=1e-6)
    fused = FusedDecode(w, cfg)
    s_f, s_r, s_p = (RunState(cfg, 32) for _ in range(3))
    for token in IDS[:6]:
        ref = forward(w_ref, s_r, [token])
        got = fused.step(s_f, [token]).copy()
        np.testing.assert_allclose(got, ref, rtol=0, atol=0.02 * np.abs(ref).max())
        np.testing.assert_allclose(forward(w, s_p, [token]), got, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    lin, lin_ref = w.layers[1].w_gate_up, w_ref.layers[1].w_gate_up
    x = np.random.default_rng(1).standard_normal((40, lin.shape[1])).astype(np.float32)
    want = x.astype(np.float64) @ lin_ref.w.T.astype(np.float64)
    widened = Linear(q=lin.int8(), scale=lin.scale, offset=lin.offset)
    assert widened.int8().max() == 15 and widened.int8().min() == 0
    for got in (widened(x, SERIAL, stream=False), widened(x[:5])):
        np.testing.assert_allclose(got, want[:len(got)], rtol=1e-4, atol=1e-4 * np.abs(want).max())
    long = lin(x, SERIAL, stream=False)                      # u4a8 tiles, each token as alone
    np.testing.assert_allclose(long, want, rtol=0, atol=0.02 * np.abs(want).max())
    assert np.array_equal(lin(x[:3]), long[:3])
    # int8 activations (prefill_path "int8"): the offsets' share added in float32, the products' error only
    int8_prefill = dataclasses.replace(SERIAL, int8_prefill=True)
    got = widened(x, int8_prefill, stream=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=0.02 * np.abs(want).max())
    # the packed rows on that path: the int8 panel with nibbles widened per tile, the same int8
    # activations as the u4a8 tiles (so equal to them within float rounding)
    if lin.takes_int8_prefill:
        panel = lin(x, int8_prefill, stream=False)
        np.testing.assert_allclose(panel, long, rtol=1e-5, atol=1e-5 * np.abs(want).max())
