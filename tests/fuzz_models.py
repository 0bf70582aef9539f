"""Crafted inputs for the fuzz campaign: tiny models in the three formats, mutated the way a hostile file would be.

`make_case(k, rng, bases, dir)` writes case k into `dir` and returns a `Case`: the path to load, its format,
the mutation's category, and what a correct program must do with it:

  refuse   the file disagrees with itself (a config that does not match its tensors, aliased tensor data,
           a header length off by one): only a clean one-line error is correct; running is a silent wrong output
  same     the mutation cannot change the model (an informative field, a padding byte): an error is fine
           (e.g. verify refuses non-zero padding), running must give the baseline's tokens exactly
  any      a different but possibly valid model (a changed rope_theta, flipped weight bytes without checksums):
           a clean error or any output; never a traceback, a signal or a hang

Mutations are chosen from `rng` only, so a seed reproduces a campaign.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import struct
from pathlib import Path

import numpy as np

from container_corrupt import chunk_check, rebuild, split
from robust_models import (ARR, STR, U32, gguf_parts, pack_gguf, pack_safetensors, safetensors_parts,
                           tiny_checkpoint, tqm_bytes, write_hf)

# config keys whose value fixes a tensor's shape: any change must be refused
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "head_dim", "tie_word_embeddings")
OTHER_KEYS = ("rope_theta", "rms_norm_eps", "max_position_embeddings", "rope_scaling", "model_type",
              "architectures", "hidden_act", "sliding_window", "attention_bias", "rope_parameters")
VALUES = (0, -1, 1, 2, 3, 4, 7, 8, 10, 15, 16, 31, 32, 33, 63, 64, 65, 96, 159, 160, 161, 255, 256, 511, 512, 513,
          2**31, 2**63, 10**30, 1e308, -1e-5, 0.5, 1e-5, float("nan"), float("inf"), "x", "", None, True, False,
          [], {}, [1, 2], {"rope_type": "llama3"}, {"rope_type": "yarn", "factor": 2.0}, "MistralForCausalLM",
          ["GPT2LMHeadModel"], "gelu")
GGUF_SHAPE_KEYS = ("llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                   "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count")


@dataclasses.dataclass
class Case:
    k: int
    fmt: str           # tqm | hf | gguf
    category: str      # e.g. tqm:config, hf:header, gguf:tensor-info
    path: str
    expect: str        # refuse | same | any
    what: str          # the mutation, in words (for reports)
    base: str          # the unmutated input it came from (its tokens are what `same` must give)


def bases(seed: int = 0) -> dict:
    """The unmutated inputs, built once: a checkpoint and its bytes in each format."""
    ck = tiny_checkpoint(seed)
    meta, tensors = gguf_parts(ck)
    tqms = {codec: tqm_bytes(ck, codec=codec, bits=bits, chunk_size=1024)
            for codec, bits in (("raw", 8), ("lzw", 8), ("rans", 4), ("zstd", 2))}
    return {"ckpt": ck, "tqm": tqms, "gguf": (meta, tensors)}


def _num_equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return a == b


def _config_expect(orig: dict, key: str, value) -> str:
    if key in SHAPE_KEYS:
        old = orig.get(key)
        if key == "head_dim" and value in (None, 0) and old == orig["hidden_size"] // orig["num_attention_heads"]:
            return "same"     # head_dim absent means hidden_size / heads: the same number
        return "same" if _num_equal(old, value) else "refuse"
    return "any"


def _edit_config(rng, d: dict) -> tuple[str, str]:
    """Edit one key of an HF-style config dict in place; returns (expectation, description)."""
    orig = dict(d)
    key = str(rng.choice(SHAPE_KEYS + OTHER_KEYS))
    if key in SHAPE_KEYS and rng.random() < 0.5 and isinstance(orig.get(key), int) and not isinstance(orig[key], bool):
        value = orig[key] + int(rng.choice([-2, -1, 1, 2, orig[key], -orig[key] // 2]))
    else:
        value = copy.deepcopy(VALUES[int(rng.integers(len(VALUES)))])
    if rng.random() < 0.1:
        d.pop(key, None)
        return ("refuse" if key in SHAPE_KEYS and key not in ("head_dim", "tie_word_embeddings", "num_key_value_heads")
                else "any"), f"config: {key} removed"
    d[key] = value
    return _config_expect(orig, key, value), f"config: {key} = {value!r}"


# ---- .tqm

def _tqm_case(rng, b: dict, out: Path) -> tuple[str, str, str]:
    codec = str(rng.choice(list(b["tqm"])))
    blob = b["tqm"][codec]
    data, index, header = split(blob)
    kind = str(rng.choice(["config", "config", "config", "record", "index", "flip", "truncate", "forge", "json"]))
    expect, what = "any", kind
    if kind == "config":
        expect, what = _edit_config(rng, header["config"])
        blob = rebuild(data, index, header)
    elif kind == "record":
        rec = header["tensors"][int(rng.integers(len(header["tensors"])))]
        field = str(rng.choice(["shape", "rows", "row_bytes", "group", "scale_offset", "scale_size", "first_chunk",
                                "n_chunks", "qtype", "scale_dtype", "name", "codec", "stats", "scale_crc32"]))
        if field in ("codec", "stats"):
            rec[field], expect = ("zstd" if field == "codec" else {"x": 1}), "same"   # informative fields
        elif field == "name":
            others = [r["name"] for r in header["tensors"] if r is not rec and r["shape"] == rec["shape"]]
            if others and rng.random() < 0.5:     # two same-shaped tensors swap names: another valid model
                other = next(r for r in header["tensors"] if r["name"] == others[0])
                rec["name"], other["name"], expect = other["name"], rec["name"], "any"
            else:
                rec["name"], expect = rec["name"] + ".bias", "refuse"
        elif field == "shape":
            s = list(rec["shape"])
            s[int(rng.integers(len(s)))] += int(rng.choice([-1, 1, 2]))
            rec["shape"], expect = s, "refuse"
        else:
            old = rec[field]
            rec[field] = (old + int(rng.choice([-64, -1, 1, 64])) if isinstance(old, int)
                          else VALUES[int(rng.integers(len(VALUES)))])
            expect = "same" if rec[field] == old else "refuse"
        what = f"record {rec['name']}: {field}"
        blob = rebuild(data, index, header)
    elif kind == "index":
        i = int(rng.integers(index.size))
        field = str(rng.choice(["offset", "stored_size", "raw_size", "row_start", "row_count", "codec"]))
        j = int(rng.integers(index.size))
        if field == "offset" and rng.random() < 0.5 and j != i:      # alias another chunk's bytes, crc fixed
            index[i]["offset"], index[i]["stored_size"] = index[j]["offset"], index[j]["stored_size"]
            index[i]["check"] = index[j]["check"]
            what = f"index: chunk {i} aliased onto chunk {j}"
        else:
            bits = 8 * index.dtype[field].itemsize
            index[i][field] = (int(index[i][field]) + int(rng.choice([-64, -1, 1, 64, 1 << 20]))) % (1 << bits)
            what = f"index: chunk {i} {field}"
        # A codec id changed to another valid one fails that chunk's checksum when the chunk is read (2.x
        # seeds it with the codec: tests/test_container.py); the streamed and fused sources read only the
        # embedding rows a prompt needs, so a run may never read it.
        expect = "any" if field == "codec" else "refuse"
        blob = rebuild(data, index, header)
    elif kind == "flip":
        b_ = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            b_[int(rng.integers(len(b_)))] ^= int(rng.integers(1, 256))
        blob, expect, what = bytes(b_), "same", "byte flips (checksums not fixed)"
    elif kind == "truncate":
        blob, expect, what = blob[:int(rng.integers(len(blob)))], "refuse", "truncated"
    elif kind == "forge":
        i = int(rng.integers(index.size))
        off, size = int(index[i]["offset"]), int(index[i]["stored_size"])
        d = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            d[off + int(rng.integers(size))] ^= int(rng.integers(1, 256))
        index[i]["check"] = chunk_check(data, bytes(d[off:off + size]), index[i])
        blob, expect, what = rebuild(bytes(d), index, header), "any", f"chunk {i} payload forged, crc fixed"
    else:   # json structure
        choice = int(rng.integers(6))
        if choice == 0:
            js, what = b"[" * 100000 + b"]" * 100000, "JSON nested 100,000 deep"
        elif choice == 1:
            js, what = json.dumps([header]).encode(), "JSON header is a list"
        elif choice == 2:
            header["config"] = {"a": [[[[[[]]]]]] * 3}
            js, what = json.dumps(header).encode(), "config replaced"
        elif choice == 3:
            header["tokenizer"]["tokenizer_json"], what = "{}", "tokenizer_json = {}"
            js = json.dumps(header).encode()
        elif choice == 4:
            header["tokenizer"]["chat_template"], what = "{% for %}", "chat_template broken"
            js = json.dumps(header).encode()
        else:
            header["tokenizer"]["eos_token"], what = 5, "eos_token = 5"
            js = json.dumps(header).encode()
        blob = rebuild(data, index, header, js)
        expect = "refuse" if choice < 3 else "any"
    path = out / "m.tqm"
    path.write_bytes(blob)
    return f"tqm:{kind}", expect, f"[{codec}] {what}", path, f"tqm-{codec}"


# ---- Hugging Face directories

def _hf_case(rng, b: dict, out: Path):
    ck = b["ckpt"]
    d = write_hf(out / "hf", ck)
    kind = str(rng.choice(["config", "config", "header", "header", "length", "flip", "tokenizer", "files"]))
    expect, what = "any", kind
    st = d / "model.safetensors"
    if kind == "config":
        cfg = ck.config.to_hf_dict()
        expect, what = _edit_config(rng, cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    elif kind in ("header", "length"):
        header, data = safetensors_parts(st)
        delta = 0
        names = [n for n in header if n != "__metadata__"]
        n = names[int(rng.integers(len(names)))]
        if kind == "length":
            delta = int(rng.choice([-9, -8, -1, 1, 7, 8]))
            expect, what = "refuse", f"header length {delta:+d}"
        else:
            field = str(rng.choice(["dtype", "shape", "data_offsets", "swap", "alias", "extra"]))
            e = header[n]
            if field == "dtype":
                e["dtype"] = str(rng.choice(["F16", "BF16", "F64", "I8", "U8", "I64", "Q4", 7]))
                expect = "refuse"
            elif field == "shape":
                s = list(e["shape"])
                s[int(rng.integers(len(s)))] += int(rng.choice([-1, 1]))
                e["shape"], expect = s, "refuse"
            elif field == "data_offsets":
                a, z = e["data_offsets"]
                shift = int(rng.choice([-4, -1, 1, 4, 1 << 30]))
                e["data_offsets"], expect = [a + shift, z + shift], "refuse"
            elif field == "swap":    # two same-shaped tensors trade their data: another valid model
                same = [m for m in names if m != n and header[m]["shape"] == e["shape"]]
                if same:
                    m = same[0]
                    e["data_offsets"], header[m]["data_offsets"] = header[m]["data_offsets"], e["data_offsets"]
                expect = "any"
            elif field == "alias":
                same = [m for m in names if m != n and header[m]["shape"] == e["shape"]]
                if same:
                    e["data_offsets"] = header[same[0]]["data_offsets"]
                    expect = "refuse"
            else:
                header["model.layers.9.mlp.up_proj.weight"] = dict(e)
                expect = "refuse"
            what = f"header: {n} {field}"
        st.write_bytes(pack_safetensors(header, data, delta))
    elif kind == "flip":
        raw = bytearray(st.read_bytes())
        (n,) = struct.unpack_from("<Q", raw)
        for _ in range(int(rng.integers(1, 6))):
            raw[8 + n + int(rng.integers(len(raw) - 8 - n))] ^= int(rng.integers(1, 256))
        st.write_bytes(bytes(raw))
        what = "weight bytes flipped (safetensors has no checksums)"
    elif kind == "tokenizer":
        choice = int(rng.integers(5))
        if choice == 0:
            (d / "tokenizer.json").write_bytes(bytes(rng.integers(0, 256, 64, dtype=np.uint8)))
        elif choice == 1:
            (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": int(rng.integers(1000))}))
        elif choice == 2:
            (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x | nofilter }}"}))
        elif choice == 3:
            (d / "tokenizer_config.json").write_text("[1, 2")
        else:
            tj = json.loads((d / "tokenizer.json").read_text())
            tj["model"]["vocab"] = list(tj["model"]["vocab"])
            (d / "tokenizer.json").write_text(json.dumps(tj))
        what = f"tokenizer files ({choice})"
    else:
        choice = int(rng.integers(5))
        if choice == 0:
            st.unlink()
        elif choice == 1:
            (d / "config.json").write_bytes(b"\xff\xfe\x00")
        elif choice == 2:
            (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../../etc/passwd"}}))
        elif choice == 3:
            (d / "config.json").write_text('"llama"')
        else:
            st.write_bytes(st.read_bytes()[:int(rng.integers(8, 4096))])
        expect, what = "refuse", f"files ({choice})"
    return f"hf:{kind}", expect, what, d, "hf"


# ---- GGUF files

def _gguf_case(rng, b: dict, out: Path):
    meta, tensors = copy.deepcopy(b["gguf"])
    kind = str(rng.choice(["metadata", "metadata", "tensor-info", "tensor-info", "flip", "truncate", "nested"]))
    expect, what, offsets = "any", kind, None
    if kind == "metadata":
        i = int(rng.integers(len(meta)))
        key, vtype, value = meta[i]
        if key.startswith("llama.") or rng.random() < 0.3:
            choice = int(rng.integers(4))
            if choice == 0 and vtype == U32:
                new = value + int(rng.choice([-1, 1, value]))
                meta[i] = (key, vtype, new)
                expect = "refuse" if key in GGUF_SHAPE_KEYS else "any"
            elif choice == 1:
                meta[i] = (key, STR, "x")
                expect = "refuse" if key in GGUF_SHAPE_KEYS else "any"
            elif choice == 2:
                meta.pop(i)
                expect = "refuse" if key in GGUF_SHAPE_KEYS[:5] else "any"
            else:
                meta.append(("llama.attention.sliding_window", U32, 4096))
                expect = "refuse"
        else:
            meta[i] = (key, ARR, (U32, [1, 2, 3]))
        what = f"metadata {key}"
    elif kind == "tensor-info":
        i = int(rng.integers(len(tensors)))
        field = str(rng.choice(["dims", "type", "offset", "alias", "name", "extra"]))
        name, dims = tensors[i][0], tensors[i][1]
        if field == "dims":
            dims = list(dims)
            dims[int(rng.integers(len(dims)))] += int(rng.choice([-1, 1]))
            tensors[i][1], expect = tuple(dims), "refuse"
        elif field == "type":
            tensors[i][2] = int(rng.choice([1, 2, 8, 30, 99]))
            expect = "refuse" if tensors[i][2] == 99 else "any"   # a smaller known type reads fewer bytes: valid
        elif field in ("offset", "alias"):
            layout, pos = [], 0
            for t in tensors:
                layout.append(pos)
                pos += -(-len(t[3]) // 32) * 32
            offsets = list(layout)
            if field == "alias":
                same = [j for j, t in enumerate(tensors) if j != i and len(t[3]) == len(tensors[i][3])]
                if same:
                    offsets[i] = layout[same[0]]
            else:
                offsets[i] = (offsets[i] + int(rng.choice([-32, 32, 1, 1 << 40]))) % (1 << 64)
            expect = "refuse" if offsets != layout else "same"
        elif field == "name":
            tensors[i][0], expect = name.replace(".weight", ".bias"), "refuse"
        else:
            tensors.append(["blk.7.ffn_up.weight", dims, 0, tensors[i][3]])
            expect = "refuse"
        what = f"tensor {name}: {field}"
    elif kind == "nested":
        depth = int(rng.choice([9, 50, 5000]))
        meta.append(("x.deep", ARR, struct.pack("<IQ", ARR, 1) * depth + struct.pack("<IQ", STR, 0)))
        expect, what = "refuse", f"metadata arrays nested {depth} deep"
    blob = pack_gguf(meta, tensors, offsets=offsets)
    if kind == "flip":
        b_ = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            b_[int(rng.integers(len(b_)))] ^= int(rng.integers(1, 256))
        blob, what = bytes(b_), "byte flips"
    elif kind == "truncate":
        blob, expect, what = blob[:int(rng.integers(len(blob)))], "refuse", "truncated"
    path = out / "m.gguf"
    path.write_bytes(blob)
    return f"gguf:{kind}", expect, what, path, "gguf"


FORMATS = {"tqm": _tqm_case, "hf": _hf_case, "gguf": _gguf_case}


def make_case(k: int, seed: int, b: dict, out: Path) -> Case:
    """Case k of the campaign with this seed: formats in turn, the mutation drawn from (seed, k)."""
    rng = np.random.default_rng([seed, k])
    fmt = ("tqm", "hf", "gguf")[k % 3]
    out.mkdir(parents=True, exist_ok=True)
    category, expect, what, path, base = FORMATS[fmt](rng, b, out)
    return Case(k, fmt, category, str(path), expect, what, base)


def baseline_paths(b: dict, out: Path) -> dict[str, str]:
    """The unmutated files (their tokens are what `same` cases must reproduce)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for codec, blob in b["tqm"].items():
        (out / f"{codec}.tqm").write_bytes(blob)
        paths[f"tqm-{codec}"] = str(out / f"{codec}.tqm")
    (out / "m.gguf").write_bytes(pack_gguf(*b["gguf"]))
    paths["gguf"] = str(out / "m.gguf")
    paths["hf"] = str(write_hf(out / "hf", b["ckpt"]))
    return paths
