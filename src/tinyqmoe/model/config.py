"""Llama configuration: one frozen dataclass, read from HF config.json or GGUF metadata.

Shape letters used across the model package:
  V vocab, D model dim, L layers, H query heads, K key/value heads, E head dim (D // H),
  F feed-forward dim, T tokens in a call, S positions in the KV cache.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tinyqmoe.errors import UnsupportedModel, UsageError


_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int            # V
    dim: int                   # D, hidden_size
    n_layers: int              # L
    n_heads: int               # H, query heads
    n_kv_heads: int            # K, key/value heads (GQA when K < H)
    ffn_dim: int               # F, intermediate_size of the SwiGLU MLP
    norm_eps: float = 1e-5     # RMSNorm epsilon
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None   # HF form, e.g. {"rope_type": "llama3", "factor": 32.0, ...}
    max_seq_len: int = 2048    # max_position_embeddings
    tie_embeddings: bool = True  # LM head shares the token embedding matrix
    head_dim: int = 0          # E; 0 means dim // n_heads

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.dim // max(self.n_heads, 1))
        problems = []
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be positive")
        if self.n_heads > 0 and self.n_kv_heads > 0 and self.n_heads % self.n_kv_heads:
            problems.append(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            problems.append(f"head_dim {self.head_dim} must be even for RoPE")
        if problems:
            raise UnsupportedModel("bad Llama config: " + "; ".join(problems))

    # ---- derived sizes
    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def n_params(self) -> int:
        per_layer = (self.dim * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.dim
                     + 3 * self.dim * self.ffn_dim + 2 * self.dim)
        embed = self.vocab_size * self.dim * (1 if self.tie_embeddings else 2)
        return self.n_layers * per_layer + embed + self.dim

    # ---- (de)serialisation: the HF config.json vocabulary is our on-disk form
    def to_hf_dict(self) -> dict:
        d = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.ffn_dim,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_seq_len,
            "tie_word_embeddings": self.tie_embeddings,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
        }
        return d

    @classmethod
    def from_hf_dict(cls, d: dict, path: str | Path | None = None) -> "LlamaConfig":
        arch = d.get("architectures") or []
        mtype = d.get("model_type", "llama")
        if mtype != "llama" and "LlamaForCausalLM" not in arch:
            raise UnsupportedModel(f"model_type {mtype!r} is not a Llama model", path)
        if d.get("hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"hidden_act {d['hidden_act']!r} is not supported (only silu)", path)
        if d.get("attention_bias") or d.get("mlp_bias"):
            raise UnsupportedModel("attention/MLP biases are not supported", path)
        try:
            n_heads = int(d["num_attention_heads"])
            # transformers < 5 writes rope_scaling (+ rope_theta); >= 5 nests both in rope_parameters
            params = d.get("rope_parameters") or {}
            scaling = d.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
            if scaling is not None:
                scaling = dict(scaling)
                kind = scaling.get("rope_type", scaling.get("type"))
                if kind in (None, "default"):
                    scaling = None
                elif kind != "llama3":
                    raise UnsupportedModel(f"rope_scaling type {kind!r} is not supported (only llama3)", path)
                else:
                    scaling = {"rope_type": "llama3", **{k: scaling[k] for k in _LLAMA3_KEYS}}
            rope_theta = d.get("rope_theta")
            if rope_theta is None:
                rope_theta = params.get("rope_theta", 10000.0)
            return cls(
                vocab_size=int(d["vocab_size"]),
                dim=int(d["hidden_size"]),
                n_layers=int(d["num_hidden_layers"]),
                n_heads=n_heads,
                n_kv_heads=int(d.get("num_key_value_heads") or n_heads),
                ffn_dim=int(d["intermediate_size"]),
                norm_eps=float(d.get("rms_norm_eps", 1e-5)),
                rope_theta=float(rope_theta),
                rope_scaling=scaling,
                max_seq_len=int(d.get("max_position_embeddings", 2048)),
                tie_embeddings=bool(d.get("tie_word_embeddings", False)),
                head_dim=int(d.get("head_dim") or 0),
            )
        except KeyError as exc:
            raise UnsupportedModel(f"config is missing {exc.args[0]!r}", path) from None
        except (TypeError, ValueError) as exc:
            raise UnsupportedModel(f"bad config value: {exc}", path) from None

    @classmethod
    def from_json_file(cls, path: str | Path) -> "LlamaConfig":
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UnsupportedModel("no config.json", path) from None
        except json.JSONDecodeError as exc:
            raise UnsupportedModel(f"config.json is not valid JSON ({exc.msg} at line {exc.lineno})", path) from None
        return cls.from_hf_dict(d, path)


# Named shapes. `tiny` is for tests; the Llama-3.2 shapes are the real ones (synthetic weights stand in).
_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=160,
                        rope_theta=500000.0, rope_scaling=dict(_LLAMA3_ROPE, original_max_position_embeddings=64),
                        max_seq_len=256, tie_embeddings=False),
    "smollm2-135m": LlamaConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
                                rope_theta=100000.0, max_seq_len=8192, tie_embeddings=True),
    "llama-3.2-1b": LlamaConfig(vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
                                rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE, max_seq_len=131072,
                                tie_embeddings=True, head_dim=64),
    "llama-3.2-3b": LlamaConfig(vocab_size=128256, dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, ffn_dim=8192,
                                rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE, max_seq_len=131072,
                                tie_embeddings=True, head_dim=128),
}


def preset(name: str) -> LlamaConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown shape {name!r} (choose from {', '.join(PRESETS)})") from None
