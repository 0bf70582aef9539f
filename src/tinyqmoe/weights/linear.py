"""The engine's weights: linear layers in f32 or int8, grouped per transformer layer.

Q/K/V projections are stored fused as one [H*E + 2*K*E, D] matrix and gate/up as one [2F, D]
matrix, so a decode step makes one matvec pass over each.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tinyqmoe.compress.quant import QuantizedTensor, quantize_int8, unpack_bits
from tinyqmoe.errors import UsageError
from tinyqmoe.runtime import parallel_map, threads
from tinyqmoe.kernels.matvec import SMALL_BATCH, dequant_rows_q8, matmul_f32, matmul_q8

WEIGHT_KINDS = ("f32", "int8")


@dataclasses.dataclass
class Linear:
    """y = W x for W (O, I): float32 `w`, or int8 `q` times per-group `scale` (O, I // group)."""
    w: np.ndarray | None = None        # f32 (O, I)
    q: np.ndarray | None = None        # int8 (O, I)
    scale: np.ndarray | None = None    # f32 (O, G)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.w if self.w is not None else self.q).shape

    @property
    def nbytes(self) -> int:
        if self.w is not None:
            return self.w.nbytes
        return self.q.nbytes + self.scale.nbytes

    @classmethod
    def from_float(cls, w: np.ndarray, kind: str, group: int | None = None) -> "Linear":
        if kind == "f32":
            return cls(w=np.ascontiguousarray(w, dtype=np.float32))
        qt, _ = quantize_int8(w, group)
        return cls.from_quantized(qt)

    @classmethod
    def from_quantized(cls, qt: QuantizedTensor) -> "Linear":
        """int8 as is; 4-bit and ternary values widened to int8 with the same scales (exact)."""
        q = qt.q if qt.bits == 8 else unpack_bits(qt.q, qt.bits)
        return cls(q=np.ascontiguousarray(q, dtype=np.int8), scale=np.ascontiguousarray(qt.scale, dtype=np.float32))

    @classmethod
    def concat(cls, parts: list["Linear"]) -> "Linear":
        """Stack the rows of several linears of the same kind and input size."""
        if parts[0].w is not None:
            return cls(w=np.concatenate([p.w for p in parts]))
        if len({p.scale.shape[1] for p in parts}) != 1:
            raise UsageError("cannot fuse linears with different quantization groups")
        return cls(q=np.concatenate([p.q for p in parts]), scale=np.concatenate([p.scale for p in parts]))

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` as float32 (the embedding lookup)."""
        if self.w is not None:
            return self.w[idx]
        o, i = self.q.shape
        g = self.scale.shape[1]
        return (self.q[idx].reshape(len(idx), g, i // g).astype(np.float32)
                * self.scale[idx][:, :, None]).reshape(len(idx), i)

    def __call__(self, x: np.ndarray, block_bytes: int = 0) -> np.ndarray:
        """x (T, I) f32 -> (T, O) f32. Decode and short prompts stream the weights; long prompts use BLAS."""
        T = x.shape[0]
        O, I = self.shape
        y = np.empty((T, O), np.float32)
        if T <= SMALL_BATCH:
            if self.w is not None:
                matmul_f32(y, self.w, x)
            else:
                matmul_q8(y, self.q, self.scale, x)
            return y
        # Long prompts: blocks of rows that fit the cache, dequantized and multiplied (single-threaded
        # BLAS) by the threads of the shared pool, one block per task.
        R = max(1, min(-(-O // threads()), (block_bytes or (1 << 20)) // (4 * I)))  # >= one block per thread
        x = np.ascontiguousarray(x)

        def block(r0):
            r1 = min(O, r0 + R)
            if self.w is not None:
                w = self.w[r0:r1]
            else:
                w = np.empty((r1 - r0, I), np.float32)
                dequant_rows_q8(w, self.q, self.scale, r0)
            y[:, r0:r1] = x @ w.T

        parallel_map(block, range(0, O, R))
        return y


@dataclasses.dataclass
class Layer:
    attn_norm: np.ndarray   # (D,)
    wqkv: Linear            # (H*E + 2*K*E, D)
    wo: Linear              # (D, H*E)
    ffn_norm: np.ndarray    # (D,)
    w_gate_up: Linear       # (2F, D)
    w_down: Linear          # (D, F)

    @property
    def nbytes(self) -> int:
        return (self.attn_norm.nbytes + self.ffn_norm.nbytes + self.wqkv.nbytes + self.wo.nbytes
                + self.w_gate_up.nbytes + self.w_down.nbytes)


@dataclasses.dataclass
class Weights:
    embed: Linear           # (V, D), looked up by rows
    layers: list[Layer]
    norm: np.ndarray        # (D,)
    lm_head: Linear         # (V, D); the same object as `embed` when tied
    kind: str               # "f32" | "int8"

    @property
    def nbytes(self) -> int:
        n = self.embed.nbytes + self.norm.nbytes + sum(l.nbytes for l in self.layers)
        return n if self.lm_head is self.embed else n + self.lm_head.nbytes


def layer_from_tensors(get, i: int, make) -> Layer:
    """Assemble layer i from `get(hf_name) -> array` and `make(hf_name) -> Linear`."""
    p = f"model.layers.{i}."
    return Layer(
        attn_norm=np.ascontiguousarray(get(p + "input_layernorm.weight"), dtype=np.float32),
        wqkv=Linear.concat([make(p + f"self_attn.{x}_proj.weight") for x in "qkv"]),
        wo=make(p + "self_attn.o_proj.weight"),
        ffn_norm=np.ascontiguousarray(get(p + "post_attention_layernorm.weight"), dtype=np.float32),
        w_gate_up=Linear.concat([make(p + "mlp.gate_proj.weight"), make(p + "mlp.up_proj.weight")]),
        w_down=make(p + "mlp.down_proj.weight"),
    )


def assemble_weights(config, get_float, make, progress=None) -> Weights:
    """Engine weights from `get_float(hf_name) -> f32 array` (norms) and `make(hf_name) -> Linear`."""
    embed = make("model.embed_tokens.weight")
    layers = []
    for i in range(config.n_layers):
        layers.append(layer_from_tensors(get_float, i, make))
        if progress:
            progress(i + 1, config.n_layers)
    lm_head = embed if config.tie_embeddings else make("lm_head.weight")
    kind = "int8" if embed.q is not None else "f32"
    return Weights(embed=embed, layers=layers, norm=get_float("model.norm.weight"), lm_head=lm_head, kind=kind)


def weights_from_checkpoint(ckpt, kind: str = "int8", group: int | None = None, progress=None) -> Weights:
    """Build engine weights from a float checkpoint, quantizing to int8 when asked."""
    if kind not in WEIGHT_KINDS:
        raise UsageError(f"unknown weights kind {kind!r} (choose from {', '.join(WEIGHT_KINDS)})")
    return assemble_weights(ckpt.config, ckpt.get, lambda name: Linear.from_float(ckpt.get(name), kind, group),
                            progress)


def weights_from_container(container, threads: int = 1, progress=None) -> Weights:
    """Decode a .tqm container's tensors into resident engine weights.

    Chunks are read with pread (tinyqmoe.weights.sources.ChunkReader), not through the container's
    mapping, so the file's pages never add to the process's resident memory.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tinyqmoe.weights.sources import ChunkReader

    reader = ChunkReader(container)
    pool = ThreadPoolExecutor(max(1, threads))

    def make(name):
        e = container.tensor(name)
        payload = reader.read_tensor(name, pool)
        if e.qtype == "f32":
            return Linear(w=payload.view("<f4").astype(np.float32).reshape(e.shape))
        q = payload.view(np.int8) if e.bits == 8 else payload
        return Linear.from_quantized(QuantizedTensor(q=q, scale=container.read_scale(name), group=e.group,
                                                     bits=e.bits))

    try:
        return assemble_weights(container.config, container.read_float, make, progress)
    finally:
        pool.shutdown()
        reader.close()
