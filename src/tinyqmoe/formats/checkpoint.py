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

from tinyqmoe.errors import CorruptionDetected

from tinyqmoe.model.config import LAYER_TENSORS, LlamaConfig, check_tensors, expected_tensors  # noqa: F401 (re-exported)
from tinyqmoe.model.tokenizer import TokenizerSpec

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
        return self._finite(name, np.ascontiguousarray(arr, dtype=np.float32))

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows start..stop (first axis) of a 2-D tensor as float32, reading only those rows where the
        format allows it: what lets `compress` stream a tensor bigger than its memory budget."""
        arr = self._read_rows(name, start, stop)
        assert arr.shape == (stop - start,) + self.shapes[name][1:], (name, arr.shape, start, stop)
        return self._finite(name, np.ascontiguousarray(arr, dtype=np.float32))

    def _finite(self, name: str, arr: np.ndarray) -> np.ndarray:
        """Weights are finite, or the file is refused: NaN and inf would reach the kernels (numba raises
        ZeroDivisionError in an RMSNorm of infinities) or be compressed into a container that runs wrong."""
        if not np.isfinite(arr).all():
            raise CorruptionDetected(f"tensor {name} holds NaN or infinite values", self.path)
        return arr

    def _read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._read(name)[start:stop]

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
