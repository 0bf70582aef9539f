"""Issue 12, item 1: every model is checked against its config before any kernel runs.

Each case is a forgery a hostile file could carry (checksums recomputed for .tqm): it must be refused with
a one-line TinyQMoEError naming the file, never reach a numba kernel (heap corruption), run fewer layers
or produce a traceback.
"""
import json
import math
import struct

import numpy as np
import pytest

import tinyqmoe
from robust_models import (ARR, STR, U32, edit_tqm, gguf_parts, pack_gguf, pack_safetensors, safetensors_parts,
                           tiny_checkpoint, tqm_bytes, write_hf)
from tinyqmoe.errors import CorruptionDetected, TinyQMoEError, UnsupportedModel
from tinyqmoe.model.config import PRESETS, LlamaConfig, check_tensors, expected_tensors


@pytest.fixture(scope="module")
def ckpt():
    return tiny_checkpoint(0)


@pytest.fixture(scope="module")
def tqm(ckpt):
    return tqm_bytes(ckpt, codec="raw")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path / "cache"))


def refused(path, needle: str, kind=TinyQMoEError):
    with pytest.raises(kind) as info:
        m = tinyqmoe.load(str(path), threads=1)
        list(m.stream_ids(m.tokenizer.encode("the quick"), max_new_tokens=2))
    line = info.value.one_line()
    assert "\n" not in line and str(path) in line and needle in line, line
    return line


# ---- the config's own numbers

@pytest.mark.parametrize("edit, needle", [
    ({"rope_theta": 0}, "rope_theta"), ({"rope_theta": -1.0}, "rope_theta"), ({"rope_theta": float("nan")}, "rope_theta"),
    ({"rope_theta": float("inf")}, "rope_theta"), ({"rms_norm_eps": -1e-5}, "rms_norm_eps"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps"), ({"rms_norm_eps": 0}, "rms_norm_eps"), ({"hidden_size": 0}, "dim"),
    ({"num_attention_heads": 3}, "n_kv_heads"), ({"num_key_value_heads": 8}, "n_kv_heads"),
    ({"head_dim": 15}, "even"), ({"head_dim": None, "hidden_size": 66}, "multiple of n_heads"),
    ({"vocab_size": 10**9}, "vocab_size"), ({"num_hidden_layers": True}, "not an integer"),
    ({"intermediate_size": "160"}, "not an integer"), ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    ({"architectures": ["MistralForCausalLM"]}, "MistralForCausalLM"),
    ({"architectures": ["GPT2LMHeadModel"], "model_type": "llama"}, "GPT2LMHeadModel"),
    ({"model_type": "mistral"}, "mistral"), ({"sliding_window": 4096}, "sliding_window"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 64}}, "rope_scaling"),
])
def test_bad_config_values_are_refused(edit, needle):
    d = dict(PRESETS["tiny"].to_hf_dict(), **edit)
    with pytest.raises(UnsupportedModel) as info:
        LlamaConfig.from_hf_dict(json.loads(json.dumps(d)), "cfg.json")
    assert needle in info.value.one_line() and "cfg.json" in info.value.one_line()


@pytest.mark.parametrize("raw, needle", [(b"[1, 2]", "list"), (b'"llama"', "str"), (b"\xff\xfe{}", "UTF-8"),
                                         (b"[" * 100000, "nested")])
def test_config_json_that_is_not_an_object(tmp_path, raw, needle):
    (tmp_path / "config.json").write_bytes(raw)
    with pytest.raises(UnsupportedModel) as info:
        LlamaConfig.from_json_file(tmp_path / "config.json")
    assert needle in info.value.one_line()


# ---- the tensors against the config

def test_check_tensors_names_the_file_and_tensor():
    c = PRESETS["tiny"]
    shapes = dict(expected_tensors(c))
    check_tensors(c, shapes, "m")
    for change, needle in [({"model.layers.1.mlp.up_proj.weight": (10, 64)}, "model.layers.1.mlp.up_proj.weight"),
                           ({"model.layers.2.mlp.up_proj.weight": (160, 64)}, "beyond num_hidden_layers 2"),
                           ({"model.layers.0.self_attn.q_proj.bias": (64,)}, "not part of a Llama"),
                           ({"lm_head.weight": None}, "lm_head.weight is missing")]:
        s = {k: v for k, v in dict(shapes, **change).items() if v is not None}
        with pytest.raises(CorruptionDetected) as info:
            check_tensors(c, s, "m.bin")
        assert needle in str(info.value) and "m.bin" in str(info.value)


@pytest.mark.parametrize("edit, needle", [
    ({"intermediate_size": 10}, "mlp.gate_proj.weight"),     # was heap corruption (free(): invalid next size)
    ({"intermediate_size": 159}, "mlp.gate_proj.weight"),    # was a silent wrong output
    ({"num_hidden_layers": 1}, "beyond num_hidden_layers 1"),  # was running one layer of two
    ({"num_key_value_heads": 1}, "k_proj"), ({"head_dim": 8}, "q_proj"), ({"num_attention_heads": 2}, "q_proj"),
    ({"tie_word_embeddings": True}, "lm_head.weight"), ({"vocab_size": 600}, "embed_tokens"),
    ({"rope_theta": -5.0}, "rope_theta"), ({"rms_norm_eps": float("nan")}, "rms_norm_eps"),
])
def test_checksum_valid_container_with_an_edited_config(tmp_path, tqm, edit, needle):
    from tinyqmoe.compress.inspect import verify

    path = tmp_path / "edited.tqm"
    path.write_bytes(edit_tqm(tqm, lambda h: h["config"].update(edit)))
    refused(path, needle)
    with pytest.raises(TinyQMoEError):   # verify runs the same check
        verify(path)


def test_unedited_container_runs_the_same_tokens_as_the_checkpoint(tmp_path, tqm, ckpt):
    path = tmp_path / "same.tqm"
    path.write_bytes(edit_tqm(tqm, lambda h: None))
    m = tinyqmoe.load(str(path), threads=1)
    ids = m.tokenizer.encode("the quick")
    assert len(list(m.stream_ids(ids, max_new_tokens=4))) == 4


# ---- Hugging Face directories

def test_hf_num_hidden_layers_smaller_than_the_tensors(tmp_path, ckpt):
    d = write_hf(tmp_path / "hf", ckpt, config=dict(ckpt.config.to_hf_dict(), num_hidden_layers=1))
    refused(d, "beyond num_hidden_layers 1")


def test_hf_unknown_architecture_refused_by_name(tmp_path, ckpt):
    d = write_hf(tmp_path / "hf", ckpt, config=dict(ckpt.config.to_hf_dict(), architectures=["MistralForCausalLM"],
                                                    sliding_window=4096))
    refused(d, "MistralForCausalLM")


def _rewrite_safetensors(d, edit, delta=0):
    header, data = safetensors_parts(d / "model.safetensors")
    edit(header)
    (d / "model.safetensors").write_bytes(pack_safetensors(header, data, delta))


def test_hf_overlapping_data_offsets(tmp_path, ckpt):
    d = write_hf(tmp_path / "hf", ckpt)

    def alias(h):   # point up_proj at gate_proj's bytes (same size)
        h["model.layers.0.mlp.up_proj.weight"]["data_offsets"] = h["model.layers.0.mlp.gate_proj.weight"]["data_offsets"]
    _rewrite_safetensors(d, alias)
    refused(d / "model.safetensors", "overlap")


@pytest.mark.parametrize("edit, needle", [
    (lambda h: h["model.norm.weight"].update(dtype="F16"), "model.norm.weight"),
    (lambda h: h["model.norm.weight"].update(shape=[32, 2]), "model.norm.weight"),
    (lambda h: h["model.norm.weight"].update(data_offsets=["0", 4]), "model.norm.weight"),
    (lambda h: h["model.norm.weight"].update(shape=[2**62, 2**62]), "model.norm.weight"),
    (lambda h: h.update({"model.layers.0.mlp.up_proj.bias": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}),
     "not part of a Llama"),
    (lambda h: h["model.norm.weight"].update(dtype="I32"), "model.norm.weight"),
])
def test_hf_header_forgeries(tmp_path, ckpt, edit, needle):
    d = write_hf(tmp_path / "hf", ckpt)
    _rewrite_safetensors(d, edit)
    refused(d, needle)


def test_hf_header_length_one_short(tmp_path, ckpt):
    d = write_hf(tmp_path / "hf", ckpt)
    raw = (d / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    for delta in (-1, 1, -n + 1):
        (d / "model.safetensors").write_bytes((n + delta).to_bytes(8, "little") + raw[8:])
        refused(d, "model.safetensors")


# ---- GGUF files

@pytest.fixture(scope="module")
def gguf(ckpt):
    return gguf_parts(ckpt)


def test_gguf_round_trip_runs(tmp_path, gguf):
    meta, tensors = gguf
    (tmp_path / "m.gguf").write_bytes(pack_gguf(meta, tensors))
    m = tinyqmoe.load(str(tmp_path / "m.gguf"), threads=1)
    assert len(list(m.stream_ids(m.tokenizer.encode("the"), max_new_tokens=3))) == 3


def test_gguf_tensor_pointed_at_another_tensors_data(tmp_path, gguf):
    meta, tensors = gguf
    offsets, pos = [], 0
    for t in tensors:
        offsets.append(pos)
        pos += -(-len(t[3]) // 32) * 32
    names = [t[0] for t in tensors]
    offsets[names.index("blk.0.ffn_up.weight")] = offsets[names.index("blk.0.ffn_gate.weight")]
    (tmp_path / "m.gguf").write_bytes(pack_gguf(meta, tensors, offsets=offsets))
    refused(tmp_path / "m.gguf", "overlap")


@pytest.mark.parametrize("mutate, needle", [
    (lambda m, t: t[[x[0] for x in t].index("blk.1.ffn_down.weight")].__setitem__(1, (64, 160)), "blk.1.ffn_down.weight"),
    (lambda m, t: m.__setitem__(1, ("llama.block_count", U32, 1)), "beyond num_hidden_layers 1"),
    (lambda m, t: m.append(("llama.attention.sliding_window", U32, 4096)), "sliding_window"),
    (lambda m, t: t.append(["blk.0.attn_q.bias", (64,), 0, b"\0" * 256]), "blk.0.attn_q.bias"),
    (lambda m, t: m.__setitem__(0, ("general.architecture", ARR, (U32, [1, 2]))), "architecture"),
    (lambda m, t: m.append(("tokenizer.ggml.add_bos_token", ARR, (U32, [1, 2]))), "add_bos_token"),
])
def test_gguf_forgeries(tmp_path, gguf, mutate, needle):
    meta, tensors = list(gguf[0]), [list(t) for t in gguf[1]]
    mutate(meta, tensors)
    (tmp_path / "m.gguf").write_bytes(pack_gguf(meta, tensors))
    refused(tmp_path / "m.gguf", needle)


def test_gguf_deeply_nested_metadata_is_no_recursion_error(tmp_path, gguf):
    meta = list(gguf[0])
    deep = struct.pack("<IQ", ARR, 1) * 100000 + struct.pack("<IQ", STR, 0)   # arrays of arrays, 100,000 deep
    meta.append(("x.deep", ARR, deep))
    (tmp_path / "m.gguf").write_bytes(pack_gguf(meta, gguf[1]))
    refused(tmp_path / "m.gguf", "nests arrays")


# ---- tokenizers

@pytest.mark.parametrize("change, needle", [
    ({"eos_token": 5}, "eos_token"), ({"bos_token": 7}, "bos_token"),
    ({"chat_template": "{% for m in messages %}{{ m.content }"}, "chat template"),
])
def test_hf_tokenizer_config_problems(tmp_path, ckpt, change, needle):
    spec = ckpt.tokenizer
    tc = dict({"bos_token": spec.bos_token, "eos_token": spec.eos_token, "add_bos_token": True,
               "chat_template": spec.chat_template}, **change)
    d = write_hf(tmp_path / "hf", ckpt, tokenizer_config=tc)
    refused(d, needle)


@pytest.mark.parametrize("garbage", ["{}", "not json", '{"model": {"type": "BPE", "vocab": 3}}'])
def test_garbage_tokenizer_json(tmp_path, ckpt, garbage):
    d = write_hf(tmp_path / "hf", ckpt)
    (d / "tokenizer.json").write_text(garbage)
    refused(d, "tokenizer")


@pytest.mark.parametrize("edit", [lambda t: t.update(tokenizer_json="garbage"), lambda t: t.update(eos_token=3),
                                  lambda t: t.update(chat_template="{% if %}")])
def test_container_tokenizer_problems_are_one_line(tmp_path, tqm, edit):
    path = tmp_path / "tok.tqm"
    path.write_bytes(edit_tqm(tqm, lambda h: edit(h["tokenizer"])))
    with pytest.raises(TinyQMoEError) as info:
        m = tinyqmoe.load(str(path), threads=1)
        list(m.stream("hi", max_new_tokens=1, chat=True))
    assert "\n" not in info.value.one_line()


def test_non_utf8_prompt_is_a_usage_error(tmp_path, tqm):
    path = tmp_path / "m.tqm"
    path.write_bytes(tqm)
    m = tinyqmoe.load(str(path), threads=1)
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(TinyQMoEError, match="UTF-8"):
        list(m.stream(bad, max_new_tokens=1))


def test_config_with_nan_is_refused_not_divided_by():
    with pytest.raises(UnsupportedModel):
        LlamaConfig(vocab_size=8, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8, norm_eps=math.nan)
    assert np.isfinite(PRESETS["tiny"].rope_theta)


def test_nan_weights_are_refused_before_compression(tmp_path, ckpt):
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint

    tensors = {n: ckpt.get(n).copy() for n in ckpt.names}
    tensors["model.layers.1.mlp.down_proj.weight"][3, 5] = np.nan
    d = write_hf(tmp_path / "hf", ckpt, tensors=tensors)
    with open_checkpoint(d) as ck, pytest.raises(CorruptionDetected, match="down_proj.weight holds NaN"):
        write_container(ck, tmp_path / "m.tqm", CompressOptions(codec="raw"), progress=False)
    assert not list(tmp_path.glob("*.tqm")) and not list(tmp_path.glob(".*.tmp"))
    refused(d, "NaN")
