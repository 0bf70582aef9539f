"""Synthetic models (tinyqmoe synth): layout, loading, determinism, atomicity, the streaming writer."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyqmoe
from tinyqmoe import synth
from tinyqmoe.compress.entropy import order0_entropy_bits
from tinyqmoe.compress.quant import quantize_int8
from tinyqmoe.errors import UsageError
from tinyqmoe.model.config import expected_tensors
from tinyqmoe.model.config import LlamaConfig, preset
from tinyqmoe.formats.load_hf import load_hf_tokenizer
from tinyqmoe.formats.safetensors_io import SafetensorsFile, SafetensorsWriter, f32_to_bf16_bits, write_safetensors

IDS = [5, 17, 200, 3, 99, 42, 7, 250, 11, 64, 128, 1, 77, 150, 33, 290, 8, 8, 19, 496]


@pytest.fixture(scope="module")
def tiny_f32(tmp_path_factory):
    return synth.write_synthetic_model("tiny", tmp_path_factory.mktemp("s") / "tiny", dtype="f32", progress=False)


# ---- the directory
def test_config_round_trip(tiny_f32):
    assert LlamaConfig.from_json_file(tiny_f32 / "config.json") == preset("tiny")
    for shape in ("llama-3.2-1b", "llama-3.2-3b"):
        c = preset(shape)
        assert LlamaConfig.from_hf_dict(synth.config_json(c, "BF16")) == c


def test_index_names_every_tensor_in_its_shard(tmp_path):
    shard_bytes = 150_000
    out = synth.write_synthetic_model("tiny", tmp_path / "m", dtype="f32", shard_bytes=shard_bytes, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shapes = expected_tensors(preset("tiny"))
    assert set(index["weight_map"]) == set(shapes)
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and files == sorted(p.name for p in out.glob("*.safetensors"))
    total = 0
    for fname in files:
        f = SafetensorsFile(out / fname)
        assert set(f.entries) == {n for n, v in index["weight_map"].items() if v == fname}
        assert f.metadata == {"format": "pt"}
        size = sum(e[3] for e in f.entries.values())
        assert size <= shard_bytes or len(f.entries) == 1
        total += size
        for name in f.entries:
            assert f.shape(name) == shapes[name]
        f.close()
    assert index["metadata"]["total_size"] == total == 4 * sum(int(np.prod(s)) for s in shapes.values())


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny_f32):
    a = synth.write_synthetic_model("tiny", tmp_path / "a", dtype="f32", progress=False)
    b = synth.write_synthetic_model("tiny", tmp_path / "b", dtype="f32", seed=1, progress=False)
    name = "model-00001-of-00001.safetensors"
    assert (a / name).read_bytes() == (tiny_f32 / name).read_bytes()
    assert (b / name).read_bytes() != (a / name).read_bytes()


def test_bf16_holds_the_f32_weights_rounded(tmp_path, tiny_f32):
    out = synth.write_synthetic_model("tiny", tmp_path / "bf", dtype="bf16", progress=False)
    fb, ff = SafetensorsFile(next(out.glob("*.safetensors"))), SafetensorsFile(next(tiny_f32.glob("*.safetensors")))
    for name in ("model.layers.1.mlp.down_proj.weight", "model.norm.weight"):
        assert fb.dtype_name(name) == "bf16"
        want = (f32_to_bf16_bits(ff.read(name)).astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_array_equal(fb.read(name), want)


def test_loads_in_tinyqmoe_and_norms_near_one(tiny_f32):
    model = tinyqmoe.load(str(tiny_f32), weights="f32")
    logits = model.logits(IDS)
    assert logits.shape == (len(IDS), 512) and np.isfinite(logits).all() and logits.std() > 0.01
    f = SafetensorsFile(tiny_f32 / "model-00001-of-00001.safetensors")
    norm = f.read("model.layers.0.input_layernorm.weight")
    assert abs(norm.mean() - 1) < 0.05 and 0.01 < norm.std() < 0.1


def test_transformers_loads_it_with_equal_logits(tiny_f32):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(tiny_f32, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor([IDS])).logits[0].numpy()
    ours = tinyqmoe.load(str(tiny_f32), weights="f32").logits(IDS)
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", ["llama-3.2-1b", "llama-3.2-3b"])
def test_transformers_reads_the_big_configs(tmp_path, shape):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps(synth.config_json(preset(shape), "BF16")))
    cfg = transformers.AutoConfig.from_pretrained(tmp_path)
    c = preset(shape)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size) == \
        (128256, c.dim, c.n_layers, 8192)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (c.n_heads, 8, c.head_dim)
    assert cfg.tie_word_embeddings is True and cfg.bos_token_id == 128000
    rope = getattr(cfg, "rope_parameters", None) or cfg.rope_scaling
    assert rope["rope_type"] == "llama3" and rope["factor"] == 32.0


# ---- tokenizer
def test_tokenizer_llama3_layout_full_vocab():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(synth.build_tokenizer(128256))
    assert tok.get_vocab_size(with_added_tokens=True) == 128256
    expect = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|start_header_id|>": 128006,
              "<|end_header_id|>": 128007, "<|eot_id|>": 128009, "<|reserved_special_token_247|>": 128255}
    assert {t: tok.token_to_id(t) for t in expect} == expect
    assert all(tok.id_to_token(i) is not None for i in range(0, 128256, 997))
    text = "The capital of France is Paris. Café 東京!"
    enc = tok.encode(text)
    assert enc.ids[0] == 128000 and tok.decode(enc.ids) == text
    assert " " in tok.decode(list(range(20000, 20010)))   # filler ids decode to words


def test_tokenizer_loads_in_tinyqmoe_and_transformers(tiny_f32):
    spec = load_hf_tokenizer(tiny_f32)
    assert spec.add_bos and spec.bos_token == "<|begin_of_text|>" and spec.eos_token == "<|eot_id|>"
    model = tinyqmoe.load(str(tiny_f32), weights="f32")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = model.tokenizer.encode_chat(messages)
    assert ids[0] == 496 and ids.count(496) == 1   # one BOS, from the template
    assert model.tokenizer.decode(ids, skip_special=False).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(tiny_f32)
    ref = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ref = ref["input_ids"] if not isinstance(ref, list) else ref
    assert list(ref) == ids
    assert tok("The quick brown fox")["input_ids"] == model.tokenizer.encode("The quick brown fox")


# ---- atomicity and usage
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, exc):
    calls = []
    real = synth.fill_rows

    def failing(*args):
        calls.append(1)
        if len(calls) == 5:
            raise exc("stop")
        return real(*args)

    monkeypatch.setattr(synth, "fill_rows", failing)
    with pytest.raises(exc):
        synth.write_synthetic_model("tiny", tmp_path / "m", shard_bytes=150_000, progress=False)
    assert len(calls) == 5 and list(tmp_path.iterdir()) == []


def test_refuses_a_non_empty_output_and_bad_options(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(UsageError):
        synth.write_synthetic_model("tiny", tmp_path / "full", progress=False)
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    with pytest.raises(UsageError):
        synth.write_synthetic_model("llama-9b", tmp_path / "m", progress=False)
    with pytest.raises(UsageError):
        synth.write_synthetic_model("tiny", tmp_path / "m", dtype="f16", progress=False)
    (tmp_path / "empty").mkdir()
    assert synth.write_synthetic_model("tiny", tmp_path / "empty", progress=False) == tmp_path / "empty"


def test_cli_writes_the_directory(tmp_path, capsys):
    from tinyqmoe.cli import main

    assert main(["synth", "--shape", "tiny", "-o", str(tmp_path / "c"), "--seed", "3", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c")
    assert (tmp_path / "c" / "model.safetensors.index.json").exists()
    assert main(["synth", "--shape", "tiny", "-o", str(tmp_path / "c"), "--no-progress"]) == 2


# ---- kernels against their references; weight statistics
def test_fill_rows_matches_reference_and_blocks_are_independent():
    tables = synth.mixture_tables()
    key, rt, rs, cg = synth.tensor_recipe(7, "model.layers.0.mlp.up_proj.weight", (40, 96))
    whole, ref = np.empty((40, 96), np.float32), np.empty((40, 96), np.float32)
    synth.fill_rows(whole, np.uint64(key), 0, tables, rt, rs, cg)
    synth.fill_rows_ref(ref, key, 0, tables, rt, rs, cg)
    np.testing.assert_array_equal(whole, ref)
    part = np.empty((9, 96), np.float32)
    synth.fill_rows(part, np.uint64(key), 13, tables, rt, rs, cg)
    np.testing.assert_array_equal(part, whole[13:22])


def test_bf16_bits_matches_reference():
    x = np.random.default_rng(0).standard_normal((7, 33)).astype(np.float32)
    x[0, :4] = [np.inf, -np.inf, 0.0, -0.0]
    x[1, :2] = np.array([0x3F808000, 0x3F818000], np.uint32).view(np.float32)   # ties: round to even
    out = np.empty(x.shape, np.uint16)
    synth.bf16_bits(out, x)
    np.testing.assert_array_equal(out, f32_to_bf16_bits(x))
    assert out[1, 0] == 0x3F80 and out[1, 1] == 0x3F82


def test_mixture_tables_unit_variance_symmetric():
    t = synth.mixture_tables()
    assert t.shape == (len(synth.MIXTURES), synth.TABLE_POINTS)
    np.testing.assert_allclose(t, -t[:, ::-1], atol=1e-4)
    np.testing.assert_allclose(t.astype(np.float64).var(axis=1), 1.0, atol=0.02)
    assert np.all(np.diff(t, axis=1) >= 0)


@pytest.mark.parametrize("name, lo, hi", [("model.layers.0.self_attn.q_proj.weight", 7.0, 7.3),
                                          ("model.embed_tokens.weight", 6.4, 6.9)])
def test_int8_entropy_close_to_trained_weights(name, lo, hi):
    """Per-channel int8 order-0 entropy near the default model's (q_proj 7.21, embed 6.63 bits)."""
    shape = (1024, 2048)
    key, rt, rs, cg = synth.tensor_recipe(0, name, shape)
    w = np.empty(shape, np.float32)
    synth.fill_rows(w, np.uint64(key), 0, synth.mixture_tables(), rt, rs, cg)
    q = quantize_int8(w)[0].q
    assert lo < order0_entropy_bits(q.view(np.uint8)) / q.size < hi


# ---- the streaming writer
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(1, 5), st.sampled_from(["F32", "BF16", "F16"])),
                min_size=1, max_size=4),
       st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_writer_row_blocks_equal_one_shot(tmp_path_factory, layout, step, seed):
    rng = np.random.default_rng(seed)
    tensors = {f"t{i}": rng.standard_normal((rows, cols)).astype(np.float32) for i, (rows, cols, _) in enumerate(layout)}
    kinds = {f"t{i}": kind for i, (_, _, kind) in enumerate(layout)}
    d = tmp_path_factory.mktemp("w")
    write_safetensors(d / "one.safetensors", {n: t.astype(np.float16) if kinds[n] == "F16" else t
                                              for n, t in tensors.items()}, kinds, metadata={"format": "pt"})
    with SafetensorsWriter(d / "rows.safetensors", {n: (kinds[n], t.shape) for n, t in tensors.items()},
                           metadata={"format": "pt"}) as w:
        for n, t in tensors.items():
            for r in range(0, len(t), step):
                w.write(n, t[r:r + step])
    assert (d / "rows.safetensors").read_bytes() == (d / "one.safetensors").read_bytes()


def test_writer_rejects_misuse_and_leaves_nothing(tmp_path):
    specs = {"a": ("F32", (2, 3)), "b": ("BF16", (1, 3))}
    w = SafetensorsWriter(tmp_path / "x.safetensors", specs)
    with pytest.raises(UsageError):
        w.write("b", np.zeros((1, 3), np.float32))          # out of order
    with pytest.raises(UsageError):
        w.write("a", np.zeros((3, 3), np.float32))          # too many rows
    with pytest.raises(UsageError):
        w.write("a", np.zeros((1, 4), np.float32))          # wrong row shape
    w.write("a", np.zeros((2, 3), np.float32))
    with pytest.raises(UsageError):
        w.close()                                           # "b" never written
    assert list(tmp_path.iterdir()) == []
