"""open_gguf: a tiny transformers Llama written as llama.cpp writes it comes back as the original tensors."""
import numpy as np
import pytest

from gguf_tiny import gguf_layout, llamacpp_permute, tiny_hf_llama, write_llama_gguf
from tinyqmoe.errors import CorruptionDetected, UnsupportedModel, UsageError
from tinyqmoe.model.config import expected_tensors
from tinyqmoe.model.config import LlamaConfig
from tinyqmoe.formats.load_gguf import llama3_rope_factors, open_gguf, rope_scaling_from_factors

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


@pytest.mark.parametrize("tie", [False, True])
def test_f32_round_trip_gives_the_hf_tensors(tmp_path, tie):
    cfg, sd = tiny_hf_llama(tie=tie, seed=int(tie))
    write_llama_gguf(tmp_path / "m.gguf", cfg, gguf_layout(cfg, sd))
    with open_gguf(tmp_path / "m.gguf") as ck:
        assert ck.config == LlamaConfig.from_hf_dict(cfg)
        assert ck.config.tie_embeddings is tie and ck.config.n_kv_heads == 2
        assert ck.shapes == expected_tensors(ck.config)
        assert sorted(ck.names) == sorted(sd)
        assert set(ck.source_dtypes.values()) == {"f32"}
        for name, want in sd.items():
            np.testing.assert_array_equal(ck.get(name), want, err_msg=name)
        assert ck.tokenizer is None  # the file has no vocabulary


@pytest.mark.parametrize("qtype", [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1], ids=lambda q: q.name)
def test_quantized_round_trip(tmp_path, qtype):
    """Each tensor is what gguf's reference dequantizer reads from the file, in HF row order."""
    cfg, sd = tiny_hf_llama(tie=False, seed=2)
    stored = write_llama_gguf(tmp_path / "m.gguf", cfg, gguf_layout(cfg, sd), qtype=qtype)
    ck = open_gguf(tmp_path / "m.gguf")
    h, k = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    nmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    for name, original in sd.items():
        got = ck.get(name)
        as_stored = got
        if name.endswith("q_proj.weight"):
            as_stored = llamacpp_permute(got, h, h)
        elif name.endswith("k_proj.weight"):
            as_stored = llamacpp_permute(got, h, k)
        np.testing.assert_array_equal(as_stored, stored[nmap.get_name(name, try_suffixes=(".weight",))], err_msg=name)
        rel = np.linalg.norm(got - original) / np.linalg.norm(original)
        assert rel < (0.01 if qtype in (Q.F16, Q.BF16, Q.Q8_0) else 0.2), name
        assert ck.source_dtypes[name] == (qtype.name.lower() if original.ndim == 2 else "f32")


def test_llama3_rope_scaling_comes_back_from_rope_freqs(tmp_path):
    cfg, sd = tiny_hf_llama(tie=False, rope_scaling=dict(LLAMA3_ROPE))
    write_llama_gguf(tmp_path / "m.gguf", cfg, gguf_layout(cfg, sd))
    ck = open_gguf(tmp_path / "m.gguf")
    assert ck.config.rope_scaling == LLAMA3_ROPE
    assert ck.config == LlamaConfig.from_hf_dict(cfg)
    assert "rope_freqs.weight" not in ck.shapes


@pytest.mark.parametrize("rs,theta,head_dim", [
    (dict(LLAMA3_ROPE, original_max_position_embeddings=8192), 500000.0, 64),   # Llama 3.2 1B
    (dict(LLAMA3_ROPE, factor=8.0, original_max_position_embeddings=8192), 500000.0, 128),  # Llama 3.1 8B
    (dict(LLAMA3_ROPE, low_freq_factor=2.0, high_freq_factor=6.0, original_max_position_embeddings=8192),
     500000.0, 128),
    (LLAMA3_ROPE, 500000.0, 16),
])
def test_rope_scaling_from_factors_inverts_llama_cpp(rs, theta, head_dim):
    from gguf_tiny import llamacpp_rope_freqs

    factors = llamacpp_rope_freqs(rs, theta, head_dim).astype(np.float64)
    got = rope_scaling_from_factors(factors, theta, head_dim)
    assert got == rs
    np.testing.assert_allclose(llama3_rope_factors(got, theta, head_dim), factors, rtol=1e-6)


def test_other_architectures_are_refused(tmp_path):
    cfg, sd = tiny_hf_llama(tie=True)
    path = tmp_path / "q.gguf"
    write_llama_gguf(path, cfg, gguf_layout(cfg, sd), arch="qwen2")
    with pytest.raises(UnsupportedModel, match=r"q\.gguf: architecture 'qwen2' is not supported"):
        open_gguf(path)


def test_unknown_tensor_type_is_refused(tmp_path):
    cfg, sd = tiny_hf_llama(tie=True)
    tensors = gguf_layout(cfg, sd)
    w = gguf.GGUFWriter(str(tmp_path / "iq.gguf"), "llama")
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_feed_forward_length(96)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    for name, t in tensors.items():
        if name == "blk.0.ffn_up.weight":  # IQ4_NL: 18-byte blocks of 32 weights
            w.add_tensor(name, np.zeros((t.shape[0], t.shape[1] // 32 * 18), np.uint8), raw_dtype=Q.IQ4_NL)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(UnsupportedModel, match=r"iq\.gguf: tensor blk\.0\.ffn_up\.weight has type iq4_nl"):
        open_gguf(tmp_path / "iq.gguf")


def test_missing_and_foreign_tensors(tmp_path):
    cfg, sd = tiny_hf_llama(tie=True)
    tensors = gguf_layout(cfg, sd)
    write_llama_gguf(tmp_path / "a.gguf", cfg, tensors, drop=("blk.1.ffn_up.weight",))
    with pytest.raises(CorruptionDetected, match=r"tensor blk\.1\.ffn_up\.weight is missing"):
        open_gguf(tmp_path / "a.gguf")
    write_llama_gguf(tmp_path / "b.gguf", cfg, dict(tensors, **{"blk.0.attn_q.bias": np.zeros(64, np.float32)}))
    with pytest.raises(UnsupportedModel, match=r"tensor blk\.0\.attn_q\.bias has no Llama counterpart"):
        open_gguf(tmp_path / "b.gguf")


@pytest.mark.slow
def test_default_model(default_gguf):
    ck = open_gguf(default_gguf)
    c = ck.config
    assert (c.n_layers, c.dim, c.ffn_dim, c.n_heads, c.n_kv_heads) == (30, 576, 1536, 9, 3)
    assert (c.rope_theta, c.vocab_size, c.tie_embeddings, c.head_dim, c.norm_eps) == (1e5, 49152, True, 64, 1e-5)
    assert c.rope_scaling is None and c.max_seq_len == 8192
    assert ck.shapes == expected_tensors(c)
    assert ck.source_dtypes["model.embed_tokens.weight"] == "q8_0"
    assert ck.source_dtypes["model.layers.7.mlp.down_proj.weight"] == "q4_1"
    assert ck.source_dtypes["model.norm.weight"] == "f32"
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"):
        w = ck.get(name)
        assert w.dtype == np.float32 and w.shape == ck.shapes[name] and np.isfinite(w).all()


def test_q8_0_file_runs_its_own_blocks(tmp_path, monkeypatch):
    """A GGUF whose layers are all Q8_0 loads (int8, default grouping) with the file's blocks exactly:
    the engine's int8 weights times their scales equal the file's dequantized weights bit for bit,
    so its logits equal the f32 load's within float rounding (no second quantization)."""
    import tinyqmoe
    from test_gguf_reader import TOKENIZER

    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path / "cache"))
    cfg, sd = tiny_hf_llama(tie=False, seed=3)
    path = tmp_path / "q8.gguf"
    write_llama_gguf(path, cfg, gguf_layout(cfg, sd), qtype=Q.Q8_0, tokenizer=TOKENIZER)
    model = tinyqmoe.load(str(path), threads=1)
    ref = tinyqmoe.load(str(path), weights="f32", threads=1)
    assert model.bits_per_weight == pytest.approx(8.5)
    ck = open_gguf(path)
    lin = model.weights.layers[1].w_down
    w = lin.q.astype(np.float32) * np.repeat(lin.scale, lin.q.shape[1] // lin.scale.shape[1], axis=1)
    np.testing.assert_array_equal(w, ck.get("model.layers.1.mlp.down_proj.weight"))
    ids = [0, 3, 5, 1, 2, 4, 4, 3]
    got, want = model.logits(ids), ref.logits(ids)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # a file with other types keeps the per-channel int8 cache (and its name)
    path2 = tmp_path / "q4.gguf"
    write_llama_gguf(path2, cfg, gguf_layout(cfg, sd), qtype=Q.Q4_0, tokenizer=TOKENIZER)
    assert tinyqmoe.load(str(path2), threads=1).bits_per_weight < 8.5


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0], ids=lambda q: q.name)
def test_native_weights_run_the_files_own_blocks(tmp_path, monkeypatch, qtype):
    """weights="native": a GGUF whose linears are all Q4_0, Q4_1 or Q8_0 runs its blocks as they are
    (uint4 packed, or int8, in groups of 32; Q4_0 as scale d, offset -8d, d negative in about half the
    blocks): the engine's weights equal the file's dequantized ones bit for bit; the embedding goes to
    int8 groups of 32."""
    import tinyqmoe
    from test_gguf_reader import TOKENIZER
    from tinyqmoe.compress.quant import unpack_bits

    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path / "cache"))
    cfg, sd = tiny_hf_llama(tie=False, seed=5)
    path = tmp_path / f"{qtype.name}.gguf"
    write_llama_gguf(path, cfg, gguf_layout(cfg, sd), qtype=qtype, tokenizer=TOKENIZER)
    model = tinyqmoe.load(str(path), weights="native", threads=1)
    assert model.weights_kind == "native"
    ck = open_gguf(path)
    lin = model.weights.layers[1].w_down
    if lin.p is not None:
        q = unpack_bits(lin.p, 4, signed=lin.offset is None).astype(np.float32)
        assert lin.offset is not None
    else:
        q = lin.q.astype(np.float32)
    g = q.shape[1] // lin.scale.shape[1]
    w = q * np.repeat(lin.scale, g, axis=1) + (0 if lin.offset is None else np.repeat(lin.offset, g, axis=1))
    np.testing.assert_array_equal(w, ck.get("model.layers.1.mlp.down_proj.weight"))
    if qtype == Q.Q4_0:
        assert 0.2 < np.mean(lin.scale < 0) < 0.8
        qkv = model.weights.layers[0].wqkv                     # q's rows un-permuted from llama.cpp's order
        qv = unpack_bits(qkv.p, 4, signed=False).astype(np.float32)
        w = qv * np.repeat(qkv.scale, 32, axis=1) + np.repeat(qkv.offset, 32, axis=1)
        want = ck.get("model.layers.0.self_attn.q_proj.weight")
        np.testing.assert_array_equal(w[:want.shape[0]], want)
    ref = tinyqmoe.load(str(path), weights="f32", threads=1)
    ids = [0, 3, 5, 1, 2, 4, 4, 3]
    got, want = model.logits(ids), ref.logits(ids)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-2 * np.abs(want).max())   # the embedding: int8 of 4-bit
    with pytest.raises(UsageError, match="weights=native runs a GGUF"):
        tinyqmoe.load(str(tmp_path / "cache"), weights="native")
    cached = next((tmp_path / "cache").rglob("*.tqm"))          # a container, too, is refused, not run
    with pytest.raises(UsageError, match="weights=native runs a GGUF"):
        tinyqmoe.load(str(cached), weights="native")


def test_native_weights_refuse_other_block_types(tmp_path, monkeypatch):
    import tinyqmoe
    from test_gguf_reader import TOKENIZER

    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path / "cache"))
    cfg, sd = tiny_hf_llama(tie=False, seed=5)
    for qtype in (Q.Q5_0, Q.Q5_1):
        path = tmp_path / f"{qtype.name}.gguf"
        write_llama_gguf(path, cfg, gguf_layout(cfg, sd), qtype=qtype, tokenizer=TOKENIZER)
        with pytest.raises(UsageError, match=f"all Q8_0, or Q4_0 / Q4_1; this one has {qtype.name.lower()}"):
            tinyqmoe.load(str(path), weights="native", threads=1)


def test_compress_keeps_q4_0_blocks_at_group_32(tmp_path):
    """`compress --bits 4` of a Q4_0 GGUF at group 32 keeps every block as stored (scale d, offset -8d):
    the container's weights are the file's, bit for bit; at group 64 it re-quantizes (not exact)."""
    from test_gguf_reader import TOKENIZER
    from tinyqmoe.compress.quant import dequantize
    from tinyqmoe.compress.reader import open_container
    from tinyqmoe.compress.writer import CompressOptions, write_container

    cfg, sd = tiny_hf_llama(tie=False, seed=7)
    path = tmp_path / "q4_0.gguf"
    write_llama_gguf(path, cfg, gguf_layout(cfg, sd), qtype=Q.Q4_0, tokenizer=TOKENIZER)
    name = "model.layers.0.self_attn.k_proj.weight"
    with open_gguf(path) as ck:
        want = ck.get(name)
        for group, exact in ((32, True), (64, False)):
            out = tmp_path / f"g{group}.tqm"
            write_container(ck, out, CompressOptions(bits=4, group=group, codec="raw"), progress=False)
            with open_container(out) as c:
                qt = c.read_quantized(name)
                assert c.version == (2, 2) and qt.qtype == "uint4"
                assert np.array_equal(dequantize(qt), want) == exact
                assert (np.mean(qt.scale < 0) > 0.2) == exact


def test_compress_refuses_a_q4_0_block_whose_scale_is_not_finite(tmp_path):
    """Kept Q4_0 blocks are checked as re-quantized weights are: a NaN d is refused, naming the tensor."""
    from test_gguf_reader import TOKENIZER
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.errors import CorruptionDetected

    cfg, sd = tiny_hf_llama(tie=False, seed=7)
    path = tmp_path / "q4_0.gguf"
    write_llama_gguf(path, cfg, gguf_layout(cfg, sd), qtype=Q.Q4_0, tokenizer=TOKENIZER)
    with open_gguf(path) as ck:
        offset = ck.file.tensors["blk.0.ffn_down.weight"].offset
    blob = bytearray(path.read_bytes())
    blob[offset:offset + 2] = np.float16(np.nan).tobytes()           # the first block's d
    path.write_bytes(bytes(blob))
    with open_gguf(path) as ck, pytest.raises(CorruptionDetected, match="down_proj.weight holds NaN"):
        write_container(ck, tmp_path / "x.tqm", CompressOptions(bits=4, group=32, codec="raw"), progress=False)
    assert not (tmp_path / "x.tqm").exists()
