"""A checkpoint: config + tokenizer + named weight tensors, read lazily.

Every loader (HF safetensors directory, GGUF file) returns a `Checkpoint`. Tensors use the
Hugging Face Llama names and layouts, whatever the file holds, so the rest of the code knows
one vocabulary:

  model.embed_tokens.weight                      [V, D]
  model.layers.{i}.input_layernorm.weight        [D]
  model.layers.{i}.self_attn.q_proj.weight       [H*E, D]   (HF rotate-half RoPE layout)
  model.layers.{i}.self_attn.k_proj.weight       [K*E, D]
  model.layers.{i}.self_attn.v_proj.weight       [K*E, D]
  model.layers.{i}.self_attn.o_proj.weight       [D, H*E]
  model.layers.{i}.post_attention_layernorm.weight [D]
  model.layers.{i}.mlp.gate_proj.weight          [F, D]
  model.layers.{i}.mlp.up_proj.weight            [F, D]
  model.layers.{i}.mlp.down_proj.weight          [D, F]
  model.norm.weight                              [D]
  lm_head.weight                                 [V, D]     (absent when embeddings are tied)

`get(name)` returns float32 and reads only that tensor, so a tool can walk a model bigger
than RAM one tensor at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyqmoe.model.config import LlamaConfig
from tinyqmoe.model.tokenizer import TokenizerSpec

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


class Checkpoint:
    """Base class of the loaders' results. Subclasses implement `_read(name)`."""

    def __init__(self, path: str | Path, config: LlamaConfig, tokenizer: TokenizerSpec | None,
                 shapes: dict[str, tuple[int, ...]], source_dtypes: dict[str, str]):
        self.path = Path(path)
        self.config = config
        self.tokenizer = tokenizer
        self.shapes = shapes                # name -> HF shape
        self.source_dtypes = source_dtypes  # name -> dtype as stored in the file ("bf16", "q4_1", ...)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 in HF layout."""
        arr = self._read(name)
        assert arr.shape == self.shapes[name], (name, arr.shape, self.shapes[name])
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _read(self, name: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class MemoryCheckpoint(Checkpoint):
    """A checkpoint held in memory (tests, synthetic models)."""

    def __init__(self, config: LlamaConfig, tensors: dict[str, np.ndarray],
                 tokenizer: TokenizerSpec | None = None, path: str | Path = "<memory>"):
        super().__init__(path, config, tokenizer, {k: tuple(v.shape) for k, v in tensors.items()},
                         {k: str(v.dtype) for k, v in tensors.items()})
        self._tensors = tensors

    def _read(self, name: str) -> np.ndarray:
        return self._tensors[name]
