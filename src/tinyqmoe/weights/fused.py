"""The fused source: every linear multiplies chunk by chunk as it decodes; RAM holds one chunk per thread.

Chunks are read with pread into reused buffers (compress/reader.py), so the file's pages never count
in the process's memory; with `cold=True` the reader also drops them from the page cache, so every
token reads its weights from storage, as on a device whose RAM cannot cache the model.
"""
from __future__ import annotations

import numpy as np

from tinyqmoe.runtime import Runtime
from tinyqmoe.weights.chunked import ChunkedLinear, ConcatLinear
from tinyqmoe.weights.linear import Layer

LINEARS = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
           "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")


class ChunkedSourceBase:
    """Embedding, final norm, layer norms and LM head shared by the streamed and fused sources."""

    def __init__(self, reader, rt: Runtime):
        self.reader = reader
        self.config = reader.config
        self.rt = rt
        self.embed = ChunkedLinear(reader, "model.embed_tokens.weight", rt)
        self.lm_head = (self.embed if self.config.tie_embeddings
                        else ChunkedLinear(reader, "lm_head.weight", rt))
        self.norm = reader.read_float("model.norm.weight")
        self.norms = [(reader.read_float(f"model.layers.{i}.input_layernorm.weight"),
                       reader.read_float(f"model.layers.{i}.post_attention_layernorm.weight"))
                      for i in range(self.config.n_layers)]

    def embed_rows(self, ids: np.ndarray) -> np.ndarray:
        return self.embed.rows(ids)

    @property
    def bytes_held(self) -> int:
        n = self.embed.nbytes + self.norm.nbytes + sum(a.nbytes + b.nbytes for a, b in self.norms)
        return n if self.lm_head is self.embed else n + self.lm_head.nbytes

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_read

    @property
    def decode_seconds(self) -> float:
        return self.reader.decode_seconds

    @property
    def stored_bytes(self) -> int:
        """Bytes of the file read per forward pass: every weight chunk once."""
        return sum(self.reader.tensor(n).stored_bytes for n in self.reader.names
                   if len(self.reader.tensor(n).shape) == 2)

    def close(self) -> None:
        self.reader.close()


def stacked_layer(norms, lin: dict) -> Layer:
    """A Layer whose q|k|v and gate|up are applied part by part."""
    return Layer(attn_norm=norms[0], ffn_norm=norms[1],
                 wqkv=ConcatLinear([lin["self_attn.q_proj.weight"], lin["self_attn.k_proj.weight"],
                                    lin["self_attn.v_proj.weight"]]),
                 wo=lin["self_attn.o_proj.weight"],
                 w_gate_up=ConcatLinear([lin["mlp.gate_proj.weight"], lin["mlp.up_proj.weight"]]),
                 w_down=lin["mlp.down_proj.weight"])


class FusedSource(ChunkedSourceBase):
    kind = "fused"

    def __init__(self, reader, rt: Runtime):
        super().__init__(reader, rt)
        self._layers = []
        for i in range(self.config.n_layers):
            p = f"model.layers.{i}."
            self._layers.append(stacked_layer(self.norms[i], {n: ChunkedLinear(reader, p + n, rt) for n in LINEARS}))

    def layer(self, i: int) -> Layer:
        return self._layers[i]

    @property
    def bytes_held(self) -> int:
        return super().bytes_held + sum(l.wqkv.nbytes + l.wo.nbytes + l.w_gate_up.nbytes + l.w_down.nbytes
                                        for l in self._layers)
