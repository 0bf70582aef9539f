"""The WeightSource protocol: what the forward pass asks of weights, wherever they live.

  resident  (weights/resident.py) every tensor decoded once at load: fastest, needs the whole int8
            (or f32) model in RAM.
  streamed  (weights/streamed.py) the paper's method: layer i decoded just in time into one of two
            reused buffers while a background thread decodes layer i+1; RAM holds two layers.
  fused     (weights/fused.py) no layer is ever whole in RAM: each linear reads, decodes and
            multiplies one chunk (a block of rows) at a time.

All three read a container through the one reader (compress/reader.py) and give bit-identical
tokens (tests/test_sources.py).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

# Fastest first, as measured (docs/streaming.md): fused overlaps reading, decoding and multiplying
# across threads, so it beats streamed while holding less; streamed is there by request (--source).
SOURCES = ("resident", "fused", "streamed")


class WeightSource(Protocol):
    kind: str               # "resident" | "streamed" | "fused"
    norm: np.ndarray        # (D,) final rmsnorm weight
    lm_head: object         # linear (V, D): lm_head(x (T, D), rt, out, stream) -> (T, V)

    def layer(self, i: int):
        """Layer i's weights (weights.linear.Layer): norms and linears callable as lin(x, rt, out, stream)."""

    def embed_rows(self, ids: np.ndarray) -> np.ndarray:
        """Token embeddings of `ids` as float32 (T, D)."""

    @property
    def takes_int8_prefill(self) -> bool:
        """Do its linears multiply long prompts as int8 x int8 when the runtime asks
        (Runtime.int8_prefill)? The same answer for the same file in every source."""

    @property
    def bytes_held(self) -> int:
        """Bytes of weights this source keeps in RAM (buffers and scales included)."""

    @property
    def bytes_read(self) -> int:
        """Bytes read from the weights file since load (0 for resident weights after loading)."""

    def close(self) -> None:
        """Release files and background threads."""
