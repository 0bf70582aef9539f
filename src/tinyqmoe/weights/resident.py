"""Resident weights: every tensor decoded to int8 (or f32) once, at load."""
from __future__ import annotations

import dataclasses

import numpy as np

from tinyqmoe.errors import UsageError
from tinyqmoe.weights.arena import Arena
from tinyqmoe.weights.linear import Layer, Linear, layer_from_tensors

WEIGHT_KINDS = ("f32", "int8")


@dataclasses.dataclass
class ResidentWeights:
    """A WeightSource whose layers all sit in RAM."""
    embed: Linear           # (V, D), looked up by rows
    layers: list[Layer]
    norm: np.ndarray        # (D,)
    lm_head: Linear         # (V, D); the same object as `embed` when tied
    dtype: str              # "f32" | "int8"
    kind: str = "resident"

    def layer(self, i: int) -> Layer:
        return self.layers[i]

    @property
    def takes_int8_prefill(self) -> bool:
        return self.layers[0].takes_int8_prefill

    def embed_rows(self, ids: np.ndarray) -> np.ndarray:
        return self.embed.rows(ids)

    @property
    def bytes_held(self) -> int:
        n = self.embed.nbytes + self.norm.nbytes + sum(l.nbytes for l in self.layers)
        return n if self.lm_head is self.embed else n + self.lm_head.nbytes

    nbytes = bytes_held

    @property
    def bytes_read(self) -> int:
        return 0

    def close(self) -> None:
        pass


def assemble(config, get_float, make, progress=None, alloc=None) -> ResidentWeights:
    """Engine weights from `get_float(hf_name) -> f32 array` (norms) and `make(hf_name) -> Linear`
    (`make(hf_name, alloc)` with an allocator: weights/arena.py)."""
    kept = make if alloc is None else (lambda name: make(name, alloc))
    embed = kept("model.embed_tokens.weight")
    layers = []
    for i in range(config.n_layers):
        layers.append(layer_from_tensors(get_float, i, make, alloc))
        if progress:
            progress(i + 1, config.n_layers)
    lm_head = embed if config.tie_embeddings else kept("lm_head.weight")
    dtype = "int8" if layers and layers[0].wo.rows_int is not None else "f32"
    return ResidentWeights(embed=embed, layers=layers, norm=get_float("model.norm.weight"), lm_head=lm_head,
                           dtype=dtype)


def from_checkpoint(ckpt, kind: str = "int8", group: int | None = None, progress=None) -> ResidentWeights:
    """Engine weights from a float checkpoint, quantized to int8 when asked."""
    if kind not in WEIGHT_KINDS:
        raise UsageError(f"unknown weights kind {kind!r} (choose from {', '.join(WEIGHT_KINDS)})")
    return assemble(ckpt.config, ckpt.get, lambda name: Linear.from_float(ckpt.get(name), kind, group), progress)


def resident_packed(e) -> bool:
    """Does a container tensor stay packed in RAM? 4-bit rows (int4 or uint4) of whole 32-input blocks
    (kernels/rowdot.py)."""
    from tinyqmoe.kernels.rowdot import fits

    return e.qtype in ("int4", "uint4") and fits(e.shape[1], e.group)


def from_container(container, rt, progress=None) -> ResidentWeights:
    """Decode a .tqm container's tensors into RAM through the reader (pread, chunks in parallel). The
    quantized rows and their scales go into one huge-page arena (weights/arena.py)."""
    def make(name, alloc=np.empty):
        e = container.tensor(name)
        if e.qtype == "f32":
            return Linear(w=container.read_float(name, rt.pool))
        if resident_packed(e) or e.bits == 8:
            # 4-bit kept packed: the kernels unpack nibbles in registers (kernels/rowdot.py), half the bytes
            # (uint4: scales and offsets in the kernels' (O, 2, G) layout, the file's own)
            rows = container.read_payload(name, rt.pool, alloc)
            scales = container.read_scales(name)
            kscale = alloc(scales.shape, np.float32)
            kscale[:] = scales
            return Linear(p=rows, kscale=kscale) if e.bits == 4 else Linear(q=rows.view(np.int8), kscale=kscale)
        q, scale = container.read_int8(name, rt.pool)   # widened exactly (4-bit rows the kernels cannot take)
        return Linear(q=q, scale=scale, offset=container.read_offset(name))

    return assemble(container.config, lambda n: container.read_float(n, rt.pool), make, progress,
                    Arena(resident_row_bytes(container)).empty)


def resident_row_bytes(container) -> int:
    """Bytes of the quantized rows and scales `from_container` keeps (an upper bound: 64-byte alignment
    of each array included)."""
    total = 0
    for e in (container.tensor(n) for n in container.names):
        if e.qtype != "f32" and len(e.shape) == 2:
            rows = e.rows * e.row_bytes if resident_packed(e) or e.bits == 8 else e.shape[0] * e.shape[1]
            total += rows + 4 * e.scale_size // (4 if e.scale_dtype == "f32" else 2) + 2 * 64
    return total
