"""Resident linear layers (f32 or int8) and the per-layer bundle the forward pass reads.

Q/K/V projections are stored fused as one [H*E + 2*K*E, D] matrix and gate/up as one [2F, D]
matrix, so a decode step makes one matvec pass over each.

Every linear, resident or chunked (weights/chunked.py), is a callable
    lin(x (T, I) f32, rt: Runtime, out: (T, O) f32 | None, stream: bool) -> (T, O) f32
where `stream=True` asks for the per-row streaming kernels (one pass over the weights, each output
row independent of the others) and `stream=False` for blocked BLAS (long prefills).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tinyqmoe.compress.quant import QuantizedTensor, int_values, quantize_int8, unpack_bits
from tinyqmoe.errors import UsageError
from tinyqmoe.kernels.gemm_i8 import linear_packed, linear_q8q8, panel_fits
from tinyqmoe.kernels.layer import matmul_tiles
from tinyqmoe.kernels.matvec import dequant_rows_q8, matmul_f32, matmul_q8
from tinyqmoe.kernels.matvec_q4 import dequant_rows_q4
from tinyqmoe.kernels.rowdot_a16 import takes_a16
from tinyqmoe.runtime import SERIAL, Runtime


@dataclasses.dataclass
class Linear:
    """y = W x for W (O, I): float32 `w`, or int8 `q` times per-group `scale` (O, I // group), or
    4-bit values packed two per byte `p` (O, I // 2; docs/FORMAT.md §5) times `scale`; with `offset`
    (O, G) (uint4) W = values * scale + offset, the packed fields then unsigned (0..15).

    With an offset, scale and offset are views of one (O, 2, G) array `kscale` (per row its scales,
    then its offsets: docs/FORMAT.md §6.1), the form the row kernels take (kernels/rowdot.py);
    without, `kscale` is `scale`."""
    w: np.ndarray | None = None        # f32 (O, I)
    q: np.ndarray | None = None        # int8 (O, I)
    scale: np.ndarray | None = None    # f32 (O, G)
    p: np.ndarray | None = None        # uint8 (O, I // 2): 4-bit, kept packed in memory
    offset: np.ndarray | None = None   # f32 (O, G): uint4's offsets
    kscale: np.ndarray | None = dataclasses.field(default=None, repr=False)   # (O, G) or (O, 2, G)

    def __post_init__(self):
        if self.kscale is None:
            if self.scale is None:
                return
            if self.offset is None:
                self.kscale = np.ascontiguousarray(self.scale, dtype=np.float32)
            else:
                self.kscale = np.ascontiguousarray(np.stack([self.scale, self.offset], axis=1), dtype=np.float32)
        if self.kscale.ndim == 3:
            self.scale, self.offset = self.kscale[:, 0], self.kscale[:, 1]
        else:
            self.scale, self.offset = self.kscale, None

    @property
    def shape(self) -> tuple[int, int]:
        if self.p is not None:
            return (self.p.shape[0], 2 * self.p.shape[1])
        return (self.w if self.w is not None else self.q).shape

    @property
    def nbytes(self) -> int:
        if self.w is not None:
            return self.w.nbytes
        return (self.q if self.q is not None else self.p).nbytes + self.kscale.nbytes

    @property
    def rows_int(self) -> np.ndarray | None:
        """The integer rows as the kernels take them: int8 `q`, or packed 4-bit `p` (None for f32)."""
        return self.q if self.q is not None else self.p

    @classmethod
    def from_float(cls, w: np.ndarray, kind: str, group: int | None = None) -> "Linear":
        if kind == "f32":
            return cls(w=np.ascontiguousarray(w, dtype=np.float32))
        qt, _ = quantize_int8(w, group)
        return cls.from_quantized(qt)

    @classmethod
    def from_quantized(cls, qt: QuantizedTensor) -> "Linear":
        """int8 as is; 4-bit and ternary values widened to int8 with the same scales (and offsets) (exact)."""
        return cls(q=np.ascontiguousarray(int_values(qt), dtype=np.int8), scale=qt.scale, offset=qt.offset)

    @classmethod
    def concat(cls, parts: list["Linear"], alloc=np.empty) -> "Linear":
        """Stack the rows of several linears of the same kind and input size (into arrays from
        `alloc(shape, dtype)`: weights/arena.py); a mix of offset and plain ones is widened to int8, the
        plain ones with zero offsets."""
        def stack(arrays):
            out = alloc((sum(a.shape[0] for a in arrays),) + arrays[0].shape[1:], arrays[0].dtype)
            return np.concatenate(arrays, out=out)

        if parts[0].w is not None:
            return cls(w=stack([p.w for p in parts]))
        if len({p.scale.shape[1] for p in parts}) != 1:
            raise UsageError("cannot fuse linears with different quantization groups")
        offsets = {p.offset is not None for p in parts}
        if all(p.p is not None for p in parts) and len(offsets) == 1:
            return cls(p=stack([p.p for p in parts]), kscale=stack([p.kscale for p in parts]))
        offset = (np.concatenate([p.offset if p.offset is not None else np.zeros_like(p.scale) for p in parts])
                  if True in offsets else None)
        return cls(q=stack([p.int8() for p in parts]), scale=stack([p.scale for p in parts]), offset=offset)

    @property
    def takes_int8_prefill(self) -> bool:
        """Do long prompts multiply it with int8 activations when the runtime asks (Runtime.int8_prefill)?
        Integer rows (int8, or 4-bit kept packed) in scale groups of whole 32-input blocks, on AVX2."""
        return self.rows_int is not None and panel_fits(self.shape[1], self.shape[1] // self.scale.shape[1])

    def int8(self, rows=slice(None)) -> np.ndarray:
        """Rows of the integer weights widened to int8 (a view of `q` for int8 weights)."""
        return self.q[rows] if self.q is not None else unpack_bits(self.p[rows], 4, signed=self.offset is None)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` as float32 (the embedding lookup)."""
        if self.w is not None:
            return self.w[idx]
        o, i = self.shape
        g = self.scale.shape[1]
        w = self.int8(idx).reshape(len(idx), g, i // g).astype(np.float32) * self.scale[idx][:, :, None]
        if self.offset is not None:
            w += self.offset[idx][:, :, None]
        return w.reshape(len(idx), i)

    def _add_offsets(self, y: np.ndarray, x: np.ndarray, r0: int = 0, r1: int | None = None) -> None:
        """y[:, r0:r1] += the offsets' share of W x (int8 rows with offsets, outside the row kernels):
        sum over groups of offset[o, g] * sum of x over group g."""
        if self.offset is None:
            return
        T, I = x.shape
        G = self.offset.shape[1]
        xs = x.reshape(T, G, I // G).sum(axis=2, dtype=np.float32)
        y[:, r0:r1] += xs @ self.offset[r0:r1].T

    def __call__(self, x: np.ndarray, rt: Runtime = SERIAL, out: np.ndarray | None = None,
                 stream: bool = True) -> np.ndarray:
        """x (T, I) f32 -> (T, O) f32: streamed row by row, or in blocked BLAS products."""
        T = x.shape[0]
        O, I = self.shape
        y = np.empty((T, O), np.float32) if out is None else out
        int8_prefill = not stream and rt.int8_prefill and self.takes_int8_prefill
        if stream or (self.p is not None and self.offset is not None and not int8_prefill):
            # uint4 rows always take int8 activations (kernels/rowdot.py u4a8): long prompts too, in the
            # row tiles when the panel below cannot take them (no AVX2) or the f32 prefill path was asked
            # for (what every source then does for them: the fused source multiplies its chunks so)
            if self.w is not None:
                matmul_f32(y, self.w, x)
            elif self.q is not None and takes_a16(I, self.scale.shape[1], self.offset is not None):
                # int8 rows times int16 tokens: the kernel of the fused decode and every source's
                matmul_tiles(y, self.q, self.kscale, np.ascontiguousarray(x, dtype=np.float32))
            elif self.q is not None:
                matmul_q8(y, self.q, np.ascontiguousarray(self.scale), x)
                self._add_offsets(y, x)
            else:
                matmul_tiles(y, self.p, self.kscale, np.ascontiguousarray(x, dtype=np.float32))
            return y
        if int8_prefill:
            # activations quantized per token and block, int8 x int8 products with int32 sums (numba
            # threads); 4-bit rows widened per tile, their scales (and offsets) applied per block
            if self.p is not None:
                linear_packed(x, self.p, self.kscale, rt.gemm_block_bytes, y)
                return y
            linear_q8q8(x, self.q, np.ascontiguousarray(self.scale), rt.gemm_block_bytes, y)
            self._add_offsets(y, np.ascontiguousarray(x, dtype=np.float32))
            return y
        # Long prompts: blocks of rows that fit the cache, dequantized and multiplied (single-threaded
        # BLAS) by the threads of the runtime's pool, one block per task.
        R = max(1, min(-(-O // rt.threads), rt.block_bytes // (4 * I)))  # >= one block per thread
        x = np.ascontiguousarray(x)

        def block(r0):
            r1 = min(O, r0 + R)
            if self.w is not None:
                w = self.w[r0:r1]
            elif self.q is not None:
                w = np.empty((r1 - r0, I), np.float32)
                dequant_rows_q8(w, self.q, np.ascontiguousarray(self.scale), r0)
                if self.offset is not None:
                    G = self.offset.shape[1]
                    w.reshape(r1 - r0, G, I // G)[:] += self.offset[r0:r1, :, None]
            else:
                w = np.empty((r1 - r0, I), np.float32)
                dequant_rows_q4(w, self.p, self.scale, r0)
            y[:, r0:r1] = x @ w.T

        rt.map(block, range(0, O, R))
        return y


@dataclasses.dataclass
class Layer:
    """One transformer layer's weights as the forward pass reads them (any linears: resident or chunked)."""
    attn_norm: np.ndarray   # (D,)
    wqkv: object            # (H*E + 2*K*E, D)
    wo: object              # (D, H*E)
    ffn_norm: np.ndarray    # (D,)
    w_gate_up: object       # (2F, D)
    w_down: object          # (D, F)

    @property
    def takes_int8_prefill(self) -> bool:
        """Does any of its linears multiply long prompts as int8 x int8 (`Linear.takes_int8_prefill`)?"""
        return any(lin.takes_int8_prefill for lin in (self.wqkv, self.wo, self.w_gate_up, self.w_down))

    @property
    def nbytes(self) -> int:
        return (self.attn_norm.nbytes + self.ffn_norm.nbytes + self.wqkv.nbytes + self.wo.nbytes
                + self.w_gate_up.nbytes + self.w_down.nbytes)


def layer_from_tensors(get, i: int, make, alloc=None) -> Layer:
    """Assemble layer i from `get(hf_name) -> array` and `make(hf_name) -> Linear`. With `alloc`
    (weights/arena.py), `make(hf_name, alloc)` is asked for the linears kept as they are, and the fused
    ones are stacked into `alloc`'s arrays, in the order the forward pass reads them."""
    p = f"model.layers.{i}."
    kept = make if alloc is None else (lambda name: make(name, alloc))
    fused = lambda parts: Linear.concat(parts, alloc or np.empty)   # noqa: E731
    return Layer(
        attn_norm=np.ascontiguousarray(get(p + "input_layernorm.weight"), dtype=np.float32),
        wqkv=fused([make(p + f"self_attn.{x}_proj.weight") for x in "qkv"]),
        wo=kept(p + "self_attn.o_proj.weight"),
        ffn_norm=np.ascontiguousarray(get(p + "post_attention_layernorm.weight"), dtype=np.float32),
        w_gate_up=fused([make(p + "mlp.gate_proj.weight"), make(p + "mlp.up_proj.weight")]),
        w_down=kept(p + "mlp.down_proj.weight"),
    )
