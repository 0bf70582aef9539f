"""A linear whose rows stay in the file: each call reads, decodes and multiplies chunk by chunk.

Used by the fused source for every linear and by the streamed and fused sources for the embedding
and the LM head (the largest tensors). Quantized tensors (int8, 4-bit, ternary: widened per chunk)
and f32 tensors (`--no-quantize-embeddings`, `--no-quantize-lm-head`) both work; uint4's offsets add
each group's sum of x times the offset.
"""
from __future__ import annotations

import itertools

import numpy as np

from tinyqmoe.kernels.gemm_i8 import pack_activations, panel_fits, panel_rows, panel_rows_packed
from tinyqmoe.kernels.layer import matmul_tiles_rows
from tinyqmoe.kernels.matvec import matmul_f32_rows, matmul_q8_rows
from tinyqmoe.kernels.rowdot_a16 import takes_a16
from tinyqmoe.runtime import SERIAL, Runtime
from tinyqmoe.weights.resident import resident_packed


def entry_takes_int8_prefill(e) -> bool:
    """Does a container tensor multiply long prompts with int8 activations (Runtime.int8_prefill)? Integer
    rows in scale groups the int8 GEMM takes: what `Linear.takes_int8_prefill` says of the resident copy
    (weights/resident.py), so that every source computes the same numbers."""
    return e.qtype != "f32" and panel_fits(e.shape[1], e.group)


class ChunkedLinear:
    def __init__(self, reader, name: str, rt: Runtime):
        self.reader, self.rt = reader, rt
        self.entry = reader.tensor(name)
        self.f32 = self.entry.qtype == "f32"
        self.scale = None if self.f32 else reader.read_scale(name)   # (O, G) f32: small, kept resident
        self.offset = None if self.f32 else reader.read_offset(name)   # (O, G) f32 for uint4, else None
        # 4-bit rows the row tiles take are multiplied packed, as a resident copy is (weights/resident.py
        # resident_packed; uint4 with int8 activations, kernels/rowdot.py u4a8): uint4's scales and
        # offsets as one (O, 2, G) array, the two above views of it
        self.kscale = None
        if resident_packed(self.entry):
            if self.offset is None:
                self.kscale = self.scale
            else:
                self.kscale = np.ascontiguousarray(np.stack([self.scale, self.offset], axis=1))
                self.scale, self.offset = self.kscale[:, 0], self.kscale[:, 1]
        self.a16 = (self.kscale is None and not self.f32
                    and takes_a16(self.entry.shape[1], self.scale.shape[1], self.offset is not None))

    @property
    def shape(self):
        return self.entry.shape

    @property
    def takes_int8_prefill(self) -> bool:
        return entry_takes_int8_prefill(self.entry)

    @property
    def nbytes(self) -> int:  # resident bytes
        return 0 if self.f32 else self.scale.nbytes + (0 if self.offset is None else self.offset.nbytes)

    def _buffer(self, n_rows: int) -> np.ndarray:
        """This thread's reused buffer (shared by every chunked linear of the file) for n_rows decoded
        rows: float32 or int8 [n_rows, I]."""
        e = self.entry
        dtype, width = (np.float32, e.row_bytes // 4) if self.f32 else (np.int8, e.shape[1])
        raw = self.reader.scratch("rows", n_rows * width * np.dtype(dtype).itemsize)
        return raw.view(dtype).reshape(n_rows, width)

    def chunk(self, i: int) -> np.ndarray:
        """Chunk i's rows: float32 (R, I) for an f32 tensor, else int8 (R, I)."""
        e = self.entry
        rows = self._buffer(e.chunk_rows(i)[1])
        if self.f32:
            self.reader.read_chunk(e, i, rows.view(np.uint8))
            return rows
        return self.reader.read_chunk_int8(e, i, rows)

    def _one(self, y, x, i, xs=None, packed=None):
        r0, n = self.entry.chunk_rows(i)
        if self.kscale is not None:
            e = self.entry
            rows = self.reader.read_chunk(e, i, self.reader.scratch("packed", int(e.chunks[i]["raw_size"])))
            if packed is not None:   # a long prompt: the int8 panel, nibbles widened per tile
                panel_rows_packed(y, rows, self.kscale[r0:r0 + n], *packed, x.shape[0], r0)
            else:
                matmul_tiles_rows(y, rows, self.kscale, x, r0)
            return
        if self.f32:
            matmul_f32_rows(y, self.chunk(i), x, r0)
            return
        if packed is not None:   # int8 x int8 (a long prompt): the activations quantized once per call
            xp, xsp, _ = packed
            panel_rows(y, self.chunk(i), self.scale[r0:r0 + n], xp, xsp, x.shape[0], r0)
        elif self.a16:   # int8 rows times int16 tokens, as resident rows and the fused loop multiply them
            matmul_tiles_rows(y, self.chunk(i), self.scale, x, r0)
        else:
            matmul_q8_rows(y, self.chunk(i), self.scale[r0:r0 + n], x, r0)
        if xs is not None:   # uint4: + sum over groups of offset * (x summed over the group)
            y[:, r0:r0 + n] += xs @ self.offset[r0:r0 + n].T

    def __call__(self, x: np.ndarray, rt: Runtime = SERIAL, out: np.ndarray | None = None,
                 stream: bool = True) -> np.ndarray:
        """x (T, I) f32 -> (T, O) f32, row by row (each output row independent of the others): the
        per-row kernels, or for a long prompt (stream=False) the int8 x int8 GEMM where a resident
        Linear would use it (`takes_int8_prefill` and Runtime.int8_prefill), so every source computes
        the same numbers. Each thread of the source's pool takes the next chunk not yet taken until none is left:
        dynamic, so a thread the OS preempts leaves its share to the others (a static split stalls
        on a busy machine), with one task per thread rather than per chunk."""
        y = np.empty((x.shape[0], self.entry.shape[0]), np.float32) if out is None else out
        x = np.ascontiguousarray(x)
        n = self.entry.n_chunks
        taken = itertools.count()   # next() on it is atomic under the GIL
        xs = None
        if self.offset is not None and self.kscale is None:
            T, I = x.shape
            xs = x.reshape(T, self.offset.shape[1], -1).sum(axis=2, dtype=np.float32)

        packed = pack_activations(x) if not stream and rt.int8_prefill and self.takes_int8_prefill else None

        def worker(_):
            while (i := next(taken)) < n:
                self._one(y, x, i, xs, packed)

        self.rt.map(worker, range(min(n, self.rt.threads)))
        return y

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` as float32, decoding only the chunks that hold them (embedding lookup)."""
        e = self.entry
        out = np.empty((len(idx), e.shape[1]), np.float32)
        starts = e.chunks["row_start"].astype(np.int64)
        for k, r in enumerate(np.asarray(idx)):
            i = int(np.searchsorted(starts, r, side="right") - 1)
            row = self.chunk(i)[r - starts[i]]
            if self.f32:
                out[k] = row
            else:
                G = self.scale.shape[1]
                w = row.reshape(G, -1).astype(np.float32) * self.scale[r][:, None]
                if self.offset is not None:
                    w += self.offset[r][:, None]
                out[k] = w.reshape(-1)
        return out


class ConcatLinear:
    """Several linears of one input applied as one (rows stacked): q|k|v and gate|up."""

    def __init__(self, parts):
        self.parts = parts
        self.shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)

    @property
    def takes_int8_prefill(self) -> bool:
        return any(p.takes_int8_prefill for p in self.parts)

    def __call__(self, x, rt: Runtime = SERIAL, out=None, stream: bool = True):
        y = np.empty((x.shape[0], self.shape[0]), np.float32) if out is None else out
        o = 0
        for p in self.parts:
            y[:, o:o + p.shape[0]] = p(x, rt, None, stream)
            o += p.shape[0]
        return y
