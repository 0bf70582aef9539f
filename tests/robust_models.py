"""Tiny models in all three formats, written byte by byte so that tests and the fuzz campaign can forge them.

  write_hf(dir, ckpt, config=None)      config.json + model.safetensors + tokenizer files
  gguf_parts(ckpt) / pack_gguf(...)     GGUF metadata and tensors as lists, then bytes (offsets forgeable)
  tqm_bytes(ckpt, **opts)               a .tqm container; edit_tqm(blob, fn) rewrites its JSON header
                                        with every checksum recomputed (a checksum-valid forgery)

No torch, no gguf package: everything here is numpy and the project's own writers.
"""
from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np

from container_corrupt import rebuild, split
from container_helpers import tiny_checkpoint  # noqa: F401 (re-exported for the fuzz suite)


# ---- Hugging Face directories

def write_hf(d: Path, ckpt, config: dict | None = None, tokenizer_config: dict | None = None,
             tensors: dict | None = None) -> Path:
    from tinyqmoe.formats.safetensors_io import write_safetensors

    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config if config is not None else ckpt.config.to_hf_dict()))
    write_safetensors(d / "model.safetensors", tensors if tensors is not None else
                      {n: ckpt.get(n) for n in ckpt.names})
    spec = ckpt.tokenizer
    (d / "tokenizer.json").write_text(spec.tokenizer_json)
    tc = {"bos_token": spec.bos_token, "eos_token": spec.eos_token, "add_bos_token": spec.add_bos,
          "chat_template": spec.chat_template}
    (d / "tokenizer_config.json").write_text(json.dumps(tokenizer_config if tokenizer_config is not None else tc))
    return d


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header dict, data bytes) of a safetensors file."""
    blob = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", blob)
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def pack_safetensors(header: dict, data: bytes, header_len_delta: int = 0) -> bytes:
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb) + header_len_delta) + hb + data


# ---- GGUF files (llama.cpp layout: names, dims innermost first, Q/K rows permuted for interleaved RoPE)

_GGUF_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}
_GGUF_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
# metadata value type ids
U32, I32, F32, BOOL, STR, ARR, U64, F64 = 4, 5, 6, 7, 8, 9, 10, 12


def gguf_name(hf: str) -> str:
    if hf in _GGUF_TOP:
        return _GGUF_TOP[hf]
    i, rest = hf.removeprefix("model.layers.").split(".", 1)
    return f"blk.{i}.{_GGUF_LAYER[rest.removesuffix('.weight')]}.weight"


def gguf_parts(ckpt) -> tuple[list, list]:
    """(metadata [(key, type, value)], tensors [[name, dims, ggml_type, data bytes]]) of a float checkpoint."""
    from tinyqmoe.formats.load_gguf import permute_rope_rows

    c = ckpt.config
    meta = [("general.architecture", STR, "llama"), ("llama.block_count", U32, c.n_layers),
            ("llama.context_length", U32, c.max_seq_len), ("llama.embedding_length", U32, c.dim),
            ("llama.feed_forward_length", U32, c.ffn_dim), ("llama.attention.head_count", U32, c.n_heads),
            ("llama.attention.head_count_kv", U32, c.n_kv_heads), ("llama.rope.freq_base", F32, c.rope_theta),
            ("llama.attention.layer_norm_rms_epsilon", F32, c.norm_eps),
            ("llama.rope.dimension_count", U32, c.head_dim)]
    meta += _gguf_tokenizer(ckpt.tokenizer)
    tensors = []
    for hf in ckpt.names:
        w = ckpt.get(hf)
        if hf.endswith("q_proj.weight"):
            w = permute_rope_rows(w, c.n_heads)
        elif hf.endswith("k_proj.weight"):
            w = permute_rope_rows(w, c.n_kv_heads)
        tensors.append([gguf_name(hf), tuple(reversed(w.shape)), 0, np.ascontiguousarray(w, "<f4").tobytes()])
    return meta, tensors


def _gguf_tokenizer(spec) -> list:
    """The tiny byte-level BPE as llama.cpp stores a gpt2 tokenizer."""
    tj = json.loads(spec.tokenizer_json)
    vocab = dict(tj["model"]["vocab"])
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["content"] for t in tj.get("added_tokens", []) if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    return [("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "gpt2"),
            ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
            ("tokenizer.ggml.token_type", ARR, (I32, [3 if t in special else 1 for t in tokens])),
            ("tokenizer.ggml.merges", ARR, (STR, merges)),
            ("tokenizer.ggml.bos_token_id", U32, vocab[spec.bos_token]),
            ("tokenizer.ggml.eos_token_id", U32, vocab[spec.eos_token]),
            ("tokenizer.ggml.add_bos_token", BOOL, spec.add_bos),
            ("tokenizer.chat_template", STR, spec.chat_template)]


_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q", 11: "<q",
        F64: "<d"}


def _value(vtype: int, v) -> bytes:
    if vtype == STR:
        b = v.encode("utf-8") if isinstance(v, str) else v
        return struct.pack("<Q", len(b)) + b
    if vtype == ARR and isinstance(v, bytes):   # pre-encoded (e.g. nested deeper than Python recursion allows)
        return v
    if vtype == ARR:
        etype, items = v
        return struct.pack("<IQ", etype, len(items)) + b"".join(_value(etype, x) for x in items)
    return struct.pack(_FMT[vtype], v)


def pack_gguf(meta: list, tensors: list, alignment: int = 32, offsets: list | None = None) -> bytes:
    """GGUF v3 bytes. `offsets` (one per tensor, relative to the data section) overrides the layout."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
    for key, vtype, v in meta:
        out += _value(STR, key) + struct.pack("<I", vtype) + _value(vtype, v)
    layout, pos = [], 0
    for _, _, _, data in tensors:
        layout.append(pos)
        pos += -(-len(data) // alignment) * alignment
    offsets = offsets or layout
    for (name, dims, ggml_type, _), off in zip(tensors, offsets):
        out += _value(STR, name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, off)
    out += b"\0" * (-len(out) % alignment)
    data = bytearray(pos)
    for (_, _, _, d), off in zip(tensors, layout):
        data[off:off + len(d)] = d
    return bytes(out + data)


# ---- .tqm containers

def tqm_bytes(ckpt, **opts) -> bytes:
    from tinyqmoe.compress.writer import CompressOptions, write_container

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tqm"
        write_container(ckpt, path, CompressOptions(**opts), progress=False)
        return path.read_bytes()


def edit_tqm(blob: bytes, edit) -> bytes:
    """`edit(header dict)` changes the JSON header in place; checksums are recomputed."""
    data, index, header = split(blob)
    edit(header)
    return rebuild(data, index, header)
