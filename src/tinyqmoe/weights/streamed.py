"""The streamed source (the paper's method): layer i decoded whole into one of two reused buffers just
in time, while a background thread decodes layer i+1 into the other; RAM holds two layers.

Buffers hold int8 rows (4-bit and ternary widened), or f32, except 4-bit rows of whole 32-input blocks
(int4, uint4): those stay packed (half the bytes) and multiply through kernels/rowdot.py (uint4 with its
offsets), as the resident source holds and runs them (weights/resident.py `resident_packed`): so a
long prompt takes the same arithmetic path here as there (int8 rows: the int8 GEMM)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinyqmoe.runtime import Runtime
from tinyqmoe.weights.chunked import entry_takes_int8_prefill
from tinyqmoe.weights.fused import LINEARS, ChunkedSourceBase, stacked_layer
from tinyqmoe.weights.linear import Layer, Linear


class StreamedSource(ChunkedSourceBase):
    kind = "streamed"

    def __init__(self, reader, rt: Runtime, prefetch: bool = True):
        super().__init__(reader, rt)
        self.prefetch = prefetch
        self._buffers = [self._alloc_layer(), self._alloc_layer()]
        self._fills = 0      # buffers alternate per fill, so the one being filled is never in use
        self._scales = [{n: self._scale(f"model.layers.{i}.{n}") for n in LINEARS}
                        for i in range(self.config.n_layers)]
        self._loader = ThreadPoolExecutor(1)  # its thread starts at the first prefetch
        self._pending: dict[int, object] = {}

    def _scale(self, name: str) -> np.ndarray | None:
        """(O, G) scales, (O, 2, G) scales and offsets (uint4), or None (f32)."""
        return None if self.reader.tensor(name).qtype == "f32" else self.reader.read_scales(name)

    @staticmethod
    def _buffer_form(e) -> tuple[tuple[int, int], type]:
        """The shape and dtype a tensor's rows take in a layer buffer."""
        from tinyqmoe.weights.resident import resident_packed

        if e.qtype == "f32":
            return e.shape, np.float32
        if resident_packed(e):
            return (e.rows, e.row_bytes), np.uint8
        return e.shape, np.int8

    def _alloc_layer(self) -> dict:
        return {n: np.empty(*self._buffer_form(self.reader.tensor(f"model.layers.0.{n}"))) for n in LINEARS}

    def _fill(self, i: int) -> Layer:
        buf = self._buffers[self._fills % 2]
        self._fills += 1
        p = f"model.layers.{i}."
        jobs = []
        for n in LINEARS:
            e = self.reader.tensor(p + n)
            shape, dtype = self._buffer_form(e)
            if buf[n].shape != shape or buf[n].dtype != dtype:
                buf[n] = np.empty(shape, dtype)
            jobs.extend((e, k, buf[n]) for k in range(e.n_chunks))
        self.rt.map(lambda j: self._decode(*j), jobs)
        lin = {n: Linear(w=buf[n]) if self._scales[i][n] is None
               else Linear(p=buf[n], kscale=self._scales[i][n]) if buf[n].dtype == np.uint8
               else Linear(q=buf[n], kscale=self._scales[i][n]) for n in LINEARS}
        return stacked_layer(self.norms[i], lin)

    def _decode(self, e, k, dest):
        r0, n = e.chunk_rows(k)
        if e.qtype == "f32" or dest.dtype == np.uint8:   # f32, or packed rows kept packed
            self.reader.read_chunk(e, k, dest[r0:r0 + n].view(np.uint8))
        else:
            self.reader.read_chunk_int8(e, k, dest[r0:r0 + n])

    @property
    def takes_int8_prefill(self) -> bool:
        return any(entry_takes_int8_prefill(self.reader.tensor(f"model.layers.0.{n}")) for n in LINEARS)

    def layer(self, i: int) -> Layer:
        L = self.config.n_layers
        fut = self._pending.pop(i, None)
        layer = fut.result() if fut is not None else self._fill(i)
        if self.prefetch and L > 1:
            # the next layer (wrapping to 0 for the next token) decodes while this one computes
            nxt = (i + 1) % L
            self._pending[nxt] = self._loader.submit(self._fill, nxt)
        return layer

    @property
    def bytes_held(self) -> int:
        return (super().bytes_held + sum(a.nbytes for b in self._buffers for a in b.values())
                + sum(s.nbytes for d in self._scales for s in d.values() if s is not None))

    def close(self) -> None:
        for f in self._pending.values():
            f.result()
        self._pending.clear()
        self._loader.shutdown(wait=True)
        super().close()
