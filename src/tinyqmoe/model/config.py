"""Llama configuration: one frozen dataclass, read from HF config.json or GGUF metadata.

Shape letters used across the model package:
  V vocab, D model dim, L layers, H query heads, K key/value heads, E head dim (D // H),
  F feed-forward dim, T tokens in a call, S positions in the KV cache.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

from tinyqmoe.errors import CorruptionDetected, UnsupportedModel, UsageError


_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def read_json(path: Path):
    """A JSON file's value (config.json, tokenizer files), or a one-line error naming the file."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise UnsupportedModel(f"cannot read: {exc.strerror}", path) from None
    except UnicodeDecodeError:
        raise UnsupportedModel("is not UTF-8 text", path) from None
    except json.JSONDecodeError as exc:
        raise UnsupportedModel(f"is not valid JSON ({exc.msg} at line {exc.lineno})", path) from None
    except RecursionError:
        raise UnsupportedModel("JSON is nested too deeply", path) from None


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
        if (self.head_dim == 0 and isinstance(self.n_heads, int) and isinstance(self.dim, int)
                and self.n_heads > 0 and self.dim % self.n_heads == 0):
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        problems = config_problems(self)
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
        if not isinstance(d, dict):
            raise UnsupportedModel(f"config is a JSON {type(d).__name__}, not an object", path)
        _check_architecture(d, path)
        try:
            n_heads = _int(d, "num_attention_heads")
            # transformers < 5 writes rope_scaling (+ rope_theta); >= 5 nests both in rope_parameters
            params = d.get("rope_parameters") or {}
            if not isinstance(params, dict):
                raise ValueError("rope_parameters is not an object")
            scaling = d.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
            if scaling is not None:
                if not isinstance(scaling, dict):
                    raise ValueError("rope_scaling is not an object")
                scaling = dict(scaling)
                kind = scaling.get("rope_type", scaling.get("type"))
                if kind in (None, "default"):
                    scaling = None
                elif kind != "llama3":
                    raise UnsupportedModel(f"rope_scaling type {kind!r} is not supported (only llama3)", path)
                else:
                    scaling = {"rope_type": "llama3", **{k: _number(scaling, k) for k in _LLAMA3_KEYS}}
                    scaling["original_max_position_embeddings"] = _int(scaling, "original_max_position_embeddings")
            rope_theta = d.get("rope_theta")
            if rope_theta is None:
                rope_theta = params.get("rope_theta", 10000.0)
            tie = d.get("tie_word_embeddings", False)
            if not isinstance(tie, bool):
                raise ValueError(f"tie_word_embeddings is {tie!r}, not true or false")
            return cls(
                vocab_size=_int(d, "vocab_size"),
                dim=_int(d, "hidden_size"),
                n_layers=_int(d, "num_hidden_layers"),
                n_heads=n_heads,
                n_kv_heads=_int(d, "num_key_value_heads", n_heads),
                ffn_dim=_int(d, "intermediate_size"),
                norm_eps=_number(d, "rms_norm_eps", 1e-5),
                rope_theta=_number({"rope_theta": rope_theta}, "rope_theta"),
                rope_scaling=scaling,
                max_seq_len=_int(d, "max_position_embeddings", 2048),
                tie_embeddings=tie,
                head_dim=_int(d, "head_dim", 0),
            )
        except KeyError as exc:
            raise UnsupportedModel(f"config is missing {exc.args[0]!r}", path) from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnsupportedModel(f"bad config value: {exc}", path) from None
        except UnsupportedModel as exc:
            if exc.path is not None:
                raise
            raise UnsupportedModel(exc.message, path) from None

    @classmethod
    def from_json_file(cls, path: str | Path) -> "LlamaConfig":
        if not Path(path).exists():
            raise UnsupportedModel("no config.json", path)
        return cls.from_hf_dict(read_json(Path(path)), path)


# ---- checks: the config's own numbers, then the tensors a file holds against them

_MAX = {"vocab_size": 1 << 24, "dim": 1 << 16, "n_layers": 1 << 10, "n_heads": 1 << 10, "n_kv_heads": 1 << 10,
        "ffn_dim": 1 << 20, "max_seq_len": 1 << 24, "head_dim": 1 << 12}
# Model families that HF configs may name while looking like Llama; refused by name.
_LLAMA_ARCHS = ("LlamaForCausalLM",)


def config_problems(c: LlamaConfig) -> list[str]:
    """What is wrong with a config's numbers (empty when nothing is): each would crash or mislead a kernel."""
    problems = []
    for name, hi in _MAX.items():
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int):
            problems.append(f"{name} {v!r} is not an integer")
        elif name == "head_dim" and v == 0 and not problems:
            problems.append(f"dim {c.dim} is not a multiple of n_heads {c.n_heads} and no head_dim is given")
        elif not 1 <= v <= hi:
            problems.append(f"{name} {v} is out of range (1..{hi})")
    if problems:
        return problems
    if c.n_heads % c.n_kv_heads:
        problems.append(f"n_heads {c.n_heads} is not a multiple of n_kv_heads {c.n_kv_heads}")
    if c.head_dim % 2:
        problems.append(f"head_dim {c.head_dim} must be even for RoPE")
    # both become float32 in the kernels: they must be positive normal float32 numbers (a zero eps divides
    # by zero on a zero activation)
    if not (isinstance(c.rope_theta, (int, float)) and 1e-30 <= c.rope_theta <= 1e30):
        problems.append(f"rope_theta {c.rope_theta!r} must be a positive number (1e-30..1e30)")
    if not (isinstance(c.norm_eps, (int, float)) and 1e-30 <= c.norm_eps <= 1.0):
        problems.append(f"rms_norm_eps {c.norm_eps!r} must be a positive number (1e-30..1)")
    if not isinstance(c.tie_embeddings, bool):
        problems.append(f"tie_embeddings {c.tie_embeddings!r} is not true or false")
    rs = c.rope_scaling
    if rs is not None:
        try:
            ok = (rs["rope_type"] == "llama3" and all(math.isfinite(float(rs[k])) for k in _LLAMA3_KEYS)
                  and float(rs["factor"]) >= 1 and 0 < float(rs["low_freq_factor"]) < float(rs["high_freq_factor"])
                  and int(rs["original_max_position_embeddings"]) >= 1)
        except (KeyError, TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            problems.append(f"rope_scaling {rs!r} is not valid llama3 scaling (factor >= 1, "
                            f"0 < low_freq_factor < high_freq_factor, original_max_position_embeddings >= 1)")
    return problems


def _check_architecture(d: dict, path) -> None:
    """Refuse by name what is not a plain Llama, whatever else the config says."""
    mtype = d.get("model_type", "llama")
    if mtype != "llama":
        raise UnsupportedModel(f"model_type {mtype!r} is not a Llama model", path)
    arch = d.get("architectures") or []
    if isinstance(arch, str):
        arch = [arch]
    if not isinstance(arch, list) or not all(isinstance(a, str) for a in arch):
        raise UnsupportedModel(f"architectures {arch!r} is not a list of names", path)
    other = [a for a in arch if a not in _LLAMA_ARCHS]
    if other:
        raise UnsupportedModel(f"architecture {other[0]} is not supported (only {', '.join(_LLAMA_ARCHS)})", path)
    if d.get("hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"hidden_act {d['hidden_act']!r} is not supported (only silu)", path)
    if d.get("attention_bias") or d.get("mlp_bias"):
        raise UnsupportedModel("attention/MLP biases are not supported", path)
    if d.get("sliding_window") is not None:
        raise UnsupportedModel(f"sliding_window {d['sliding_window']!r} is not supported (Llama attends to "
                               f"the whole context)", path)


def _int(d: dict, key: str, default=None) -> int:
    v = d.get(key, default) if default is not None else d[key]
    if v is None and default is not None:
        v = default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key} is {v!r}, not an integer")
    return v


def _number(d: dict, key: str, default=None) -> float:
    v = d.get(key, default) if default is not None else d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{key} is {v!r}, not a number")
    return float(v)


LAYER_TENSORS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


def expected_tensors(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Llama checkpoint must hold, with its HF shape."""
    c = config
    shapes = {"model.embed_tokens.weight": (c.vocab_size, c.dim), "model.norm.weight": (c.dim,)}
    per_layer = {
        "input_layernorm.weight": (c.dim,),
        "self_attn.q_proj.weight": (c.q_dim, c.dim),
        "self_attn.k_proj.weight": (c.kv_dim, c.dim),
        "self_attn.v_proj.weight": (c.kv_dim, c.dim),
        "self_attn.o_proj.weight": (c.dim, c.q_dim),
        "post_attention_layernorm.weight": (c.dim,),
        "mlp.gate_proj.weight": (c.ffn_dim, c.dim),
        "mlp.up_proj.weight": (c.ffn_dim, c.dim),
        "mlp.down_proj.weight": (c.dim, c.ffn_dim),
    }
    for i in range(c.n_layers):
        for suffix, shape in per_layer.items():
            shapes[f"model.layers.{i}.{suffix}"] = shape
    if not c.tie_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, c.dim)
    return shapes


_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.(.+)")


def check_tensors(config: LlamaConfig, shapes: dict[str, tuple], path, ignore: tuple[str, ...] = (),
                  names=None) -> None:
    """Refuse a model whose tensors disagree with its config, before any kernel sees them.

    `shapes` maps HF names to shapes. Every expected tensor must be present with its exact shape, and
    nothing else may be (a layer beyond num_hidden_layers, an LM head beside tied embeddings, a bias).
    `ignore` lists names a format may carry harmlessly; `names(hf_name)` gives the name the user's file
    uses (GGUF), for the message. Raises a one-line CorruptionDetected naming the file and the tensor.
    """
    shown = names or (lambda n: n)
    expected = expected_tensors(config)
    for name, shape in expected.items():
        if name not in shapes:
            raise CorruptionDetected(f"tensor {shown(name)} is missing (the config has {config.n_layers} layers, "
                                     f"{'tied' if config.tie_embeddings else 'untied'} embeddings)", path)
        got = tuple(int(x) for x in shapes[name])
        if got != shape:
            raise CorruptionDetected(f"tensor {shown(name)} has shape {list(got)}, the config implies {list(shape)}",
                                     path)
    for name in shapes:
        if name in expected or name in ignore:
            continue
        m = _LAYER_NAME.fullmatch(name)
        if m and int(m.group(1)) >= config.n_layers and m.group(2) in LAYER_TENSORS:
            why = f"is beyond num_hidden_layers {config.n_layers}"
        elif name == "lm_head.weight":
            why = "is present but the config ties the LM head to the embeddings"
        else:
            why = "is not part of a Llama model"
        raise CorruptionDetected(f"tensor {shown(name)} {why}", path)


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
