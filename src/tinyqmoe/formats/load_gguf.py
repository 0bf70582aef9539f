"""GGUF files (llama.cpp) as a Checkpoint: Llama config from metadata, tensors renamed to HF.

Three things differ from a Hugging Face checkpoint, and are undone here:
  1. names:  blk.{i}.attn_q.weight -> model.layers.{i}.self_attn.q_proj.weight, ... (GGUF_TO_HF)
  2. shapes: GGUF lists dims innermost first; a [rows, cols] matrix is stored as (cols, rows).
  3. RoPE layout: llama.cpp's convert_hf_to_gguf.py permutes the rows of q_proj and k_proj so
     that each head's two rotated halves interleave (GGML's RoPE rotates adjacent pairs):
       W.reshape(heads, 2, E/2, D).swapaxes(1, 2).reshape(heads*E, D)
     `unpermute_rope_rows` applies the inverse, giving back HF's rotate-half layout.
Llama-3 rope scaling is stored by llama.cpp as a tensor of per-frequency factors
(`rope_freqs.weight`), not as keys; `rope_scaling_from_factors` recovers the HF parameters.

Shape letters: V vocab, D dim, H heads, K kv heads, E head dim, F ffn dim.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from tinyqmoe.errors import CorruptionDetected, UnsupportedModel
from tinyqmoe.formats.checkpoint import Checkpoint
from tinyqmoe.model.config import LlamaConfig, check_tensors, expected_tensors
from tinyqmoe.formats.gguf_dequant import LAYOUTS, dequantize, q4_0_values, type_name
from tinyqmoe.formats.gguf_reader import GGUFFile
from tinyqmoe.formats.tokenizer_gguf import tokenizer_from_gguf

GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_TO_HF = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
ROPE_FREQS = "rope_freqs.weight"
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(.+)")


def hf_name(gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor, or None if it has no Llama counterpart."""
    if gguf_name in GGUF_TO_HF:
        return GGUF_TO_HF[gguf_name]
    m = _LAYER_NAME.fullmatch(gguf_name)
    if m and m.group(2) in LAYER_TO_HF:
        return f"model.layers.{int(m.group(1))}.{LAYER_TO_HF[m.group(2)]}"
    return None


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rotate-half rows -> llama.cpp interleaved rows (what convert_hf_to_gguf.py does). [H*E, D]"""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp interleaved rows -> HF rotate-half rows: the inverse of permute_rope_rows. [H*E, D]"""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFCheckpoint(Checkpoint):
    """A Llama GGUF file; `get(name)` dequantizes one tensor from the memory map."""

    def __init__(self, path: str | Path):
        self.file = GGUFFile(path)
        try:
            self._open(path)
        except BaseException:
            self.file.close()
            raise

    def _open(self, path) -> None:
        meta, tensors = self.file.metadata, self.file.tensors
        arch = meta.get("general.architecture")
        if not isinstance(arch, str) or arch != "llama":
            raise UnsupportedModel(f"architecture {arch!r} is not supported (only llama)", path)
        self._gguf_names: dict[str, str] = {}  # HF name -> GGUF name
        for name, info in tensors.items():
            if name == ROPE_FREQS:
                continue
            hf = hf_name(name)
            if hf is None:
                raise UnsupportedModel(f"tensor {name} has no Llama counterpart", path)
            if hf in self._gguf_names:
                raise CorruptionDetected(f"tensors {self._gguf_names[hf]} and {name} are the same weight", path)
            if info.ggml_type not in LAYOUTS:
                raise UnsupportedModel(f"tensor {name} has type {type_name(info.ggml_type)}, which is not "
                                       f"supported ({', '.join(lay.name for lay in LAYOUTS.values())})", path)
            self._gguf_names[hf] = name
        config = config_from_gguf(self.file)
        shapes = {hf: tensors[g].shape for hf, g in self._gguf_names.items()}
        check_tensors(config, shapes, path, names=self._gguf_name)
        expected = expected_tensors(config)
        super().__init__(path, config, tokenizer_from_gguf(meta, str(path)), {k: shapes[k] for k in expected},
                         {hf: type_name(tensors[g].ggml_type) for hf, g in self._gguf_names.items()})

    def _gguf_name(self, hf: str) -> str:
        return self._gguf_names.get(hf) or _gguf_name_of(hf)

    def _read(self, name: str) -> np.ndarray:
        info = self.file.tensors[self._gguf_names[name]]
        w = dequantize(self.file.raw(info.name), info.ggml_type, info.shape)
        if name.endswith("self_attn.q_proj.weight"):
            w = unpermute_rope_rows(w, self.config.n_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            w = unpermute_rope_rows(w, self.config.n_kv_heads)
        return w

    def _read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows of one tensor, read with pread (a mapping's touched pages would count in RSS)."""
        info, raw = self._raw_rows(name, start, stop)
        return dequantize(raw, info.ggml_type, (stop - start,) + info.shape[1:])

    def q4_0_rows(self, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of a Q4_0 tensor as the file holds them: (q uint8 [n, I] 0..15, d float32 [n, I // 32]),
        W = d * (q - 8) (gguf_dequant.q4_0_values), for writers that keep the blocks exactly. d is
        checked finite as `rows` checks the weights (the weights are finite exactly when d is)."""
        info, raw = self._raw_rows(name, start, stop)
        if type_name(info.ggml_type) != "q4_0":
            raise UnsupportedModel(f"tensor {info.name} is {type_name(info.ggml_type)}, not q4_0", self.path)
        q, d = q4_0_values(raw, stop - start, info.shape[1])
        return q, self._finite(name, d)

    def _raw_rows(self, name: str, start: int, stop: int):
        """(tensor info, uint8 [stop - start, row bytes]): rows start..stop as stored. Q and K rows are
        un-permuted per head (a row's bytes are whole blocks), so whole heads around [start, stop) are read."""
        info = self.file.tensors[self._gguf_names[name]]
        heads = (self.config.n_heads if name.endswith("self_attn.q_proj.weight") else
                 self.config.n_kv_heads if name.endswith("self_attn.k_proj.weight") else 0)
        per = info.shape[0] // heads if heads else 1
        lo, hi = start // per * per, -(-stop // per) * per
        row_bytes = info.nbytes // info.shape[0]
        raw = np.frombuffer(self.file.pread(info.offset + lo * row_bytes, (hi - lo) * row_bytes), np.uint8)
        raw = raw.reshape(hi - lo, row_bytes)
        if heads:
            raw = unpermute_rope_rows(raw, (hi - lo) // per)
        return info, np.ascontiguousarray(raw[start - lo:stop - lo])

    def close(self) -> None:
        self.file.close()


def open_gguf(path: str | Path) -> GGUFCheckpoint:
    """Open a Llama GGUF file (F32/F16/BF16/Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q2_K..Q6_K tensors)."""
    return GGUFCheckpoint(path)


def _gguf_name_of(hf: str) -> str:
    for g, h in GGUF_TO_HF.items():
        if h == hf:
            return g
    i, suffix = hf.removeprefix("model.layers.").split(".", 1)
    return f"blk.{i}." + next(g for g, h in LAYER_TO_HF.items() if h == suffix)


def _f32(x) -> float:
    """A float32 metadata value as the short decimal it was written from (9.99999975e-06 -> 1e-05)."""
    return float(str(np.float32(x)))


def config_from_gguf(f: GGUFFile) -> LlamaConfig:
    meta, path = f.metadata, f.path

    def key(name, default=None, required=True, kind=int):
        v = meta.get(f"llama.{name}", default)
        if v is None and required:
            raise UnsupportedModel(f"metadata key llama.{name} is missing", path)
        if isinstance(v, (list, np.ndarray)):
            raise UnsupportedModel(f"llama.{name} varies per layer, which is not supported", path)
        if v is not None and (isinstance(v, (bool, str)) or not isinstance(v, (int, float) if kind is float else int)):
            raise CorruptionDetected(f"llama.{name} is {v!r}, expected a number", path)
        return v

    if "token_embd.weight" not in f.tensors:
        raise CorruptionDetected("tensor token_embd.weight is missing", path)
    if key("expert_count", 0):
        raise UnsupportedModel("mixture-of-experts Llama files are not supported", path)
    if meta.get("llama.attention.sliding_window") is not None:
        raise UnsupportedModel("llama.attention.sliding_window is set: sliding-window attention (Mistral) "
                               "is not supported", path)
    n_layers, n_heads, dim = key("block_count"), key("attention.head_count"), key("embedding_length")
    if len(LAYER_TO_HF) * n_layers > len(f.tensors):
        raise CorruptionDetected(f"block_count {n_layers} but only {len(f.tensors)} tensors", path)
    head_dim = key("attention.key_length", 0, False) or key("rope.dimension_count", 0, False) or dim // max(n_heads, 1)
    if key("rope.dimension_count", head_dim, False) != head_dim:
        raise UnsupportedModel("partial rotary embeddings are not supported", path)
    if key("attention.value_length", head_dim, False) != head_dim:
        raise UnsupportedModel("value heads of another size than key heads are not supported", path)
    rope_theta = _f32(key("rope.freq_base", 10000.0, kind=float))
    try:
        return LlamaConfig(
            vocab_size=f.tensors["token_embd.weight"].shape[0],
            dim=dim,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=key("attention.head_count_kv", n_heads),
            ffn_dim=key("feed_forward_length"),
            norm_eps=_f32(key("attention.layer_norm_rms_epsilon", 1e-5, kind=float)),
            rope_theta=rope_theta,
            rope_scaling=_rope_scaling(f, rope_theta, head_dim),
            max_seq_len=key("context_length", 2048),
            tie_embeddings="output.weight" not in f.tensors,
            head_dim=head_dim,
        )
    except UnsupportedModel as exc:  # LlamaConfig's own checks do not know the file
        raise UnsupportedModel(exc.message, path) from None


def _rope_scaling(f: GGUFFile, theta: float, head_dim: int) -> dict | None:
    meta, path = f.metadata, f.path
    kind = meta.get("llama.rope.scaling.type", "none")
    factor = meta.get("llama.rope.scaling.factor", meta.get("llama.rope.scale_linear", 1.0))
    if not isinstance(kind, str) or isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise CorruptionDetected(f"llama.rope.scaling.type {kind!r} / factor {factor!r} have the wrong types", path)
    if kind not in ("none", "") and factor != 1.0:
        raise UnsupportedModel(f"rope scaling {kind!r} is not supported (only llama3)", path)
    if ROPE_FREQS not in f.tensors:
        return None
    info = f.tensors[ROPE_FREQS]
    if info.shape != (head_dim // 2,) or info.ggml_type != 0:
        raise CorruptionDetected(f"{ROPE_FREQS} has shape {list(info.shape)} and type "
                                 f"{type_name(info.ggml_type)}, expected [{head_dim // 2}] f32", path)
    factors = dequantize(f.raw(ROPE_FREQS), 0, info.shape).astype(np.float64)
    if np.allclose(factors, 1.0):
        return None
    scaling = rope_scaling_from_factors(factors, theta, head_dim)
    if scaling is None:
        raise UnsupportedModel(f"{ROPE_FREQS} does not follow Llama-3 rope scaling", path)
    return scaling


def llama3_rope_factors(rs: dict, theta: float, head_dim: int) -> np.ndarray:
    """Per-frequency divisors of llama3 rope scaling, as convert_hf_to_gguf.py writes them. [E/2]"""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    old, lo, hi, factor = (rs["original_max_position_embeddings"], rs["low_freq_factor"],
                           rs["high_freq_factor"], rs["factor"])
    smooth = (old / wavelen - lo) / (hi - lo)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old / hi, 1.0, np.where(wavelen > old / lo, factor, mid))


def rope_scaling_from_factors(factors: np.ndarray, theta: float, head_dim: int) -> dict | None:
    """HF llama3 rope_scaling that reproduces `factors` [E/2], or None if none does.

    In the smooth band 1/factor moves linearly with old/wavelen; tried in turn: Llama 3's own
    values (low 1, high 4, original context 8192), low 1 / high 4 with the context that band
    implies, and low / high fitted to the band at context 8192. The first that reproduces the
    factors wins.
    """
    factor = _f32(factors.max())
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (1 / factors - 1 / factor) / (1 - 1 / factor)  # (old / wavelen - low) / (high - low)
    band = (smooth > 1e-4) & (smooth < 1 - 1e-4)
    candidates = [(1.0, 4.0, 8192)]
    if band.any():
        candidates.append((1.0, 4.0, round(float(np.median(wavelen[band] * (3 * smooth[band] + 1))))))
    if band.sum() >= 2:
        slope, icept = np.polyfit(8192 / wavelen[band], smooth[band], 1)
        lo, hi = -icept / slope, (1 - icept) / slope
        candidates += [(round(lo, digits), round(hi, digits), 8192) for digits in (3, 6)]
    for lo, hi, old in candidates:
        rs = {"rope_type": "llama3", "factor": factor, "low_freq_factor": float(lo),
              "high_freq_factor": float(hi), "original_max_position_embeddings": int(old)}
        if hi > lo and old > 0 and np.allclose(llama3_rope_factors(rs, theta, head_dim), factors,
                                               rtol=1e-5, atol=1e-6):
            return rs
    return None
