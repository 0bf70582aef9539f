"""Weight sources for a .tqm container: where the forward pass gets layer i's weights.

  resident  every tensor decoded to int8 once at load (tinyqmoe.weights.linear.Weights): fastest,
            needs the whole int8 model in RAM.
  streamed  the paper's method: layer i's tensors are read from the file and decoded just in time
            into one of two reused buffers, while a background thread decodes layer i+1 into the
            other; RAM holds two layers.
  fused     no layer is ever whole in RAM: each linear reads, decodes and multiplies one chunk
            (a block of rows) at a time, chunks in parallel threads, each into its own small buffer.

Streamed and fused sources never map the weights: they `pread` each chunk into a reused buffer,
so the file's pages do not count in the process's memory. With `cold=True` the pages of the file
just read are also dropped from the OS page cache (POSIX_FADV_DONTNEED), so every token reads its
weights from storage, as on a device whose RAM cannot cache the model.
The embedding and the LM head are read chunk by chunk in both (they are the largest tensors).
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinyqmoe.compress.codecs import codec_by_name
from tinyqmoe.compress.common import crc32
from tinyqmoe.compress.reader import decode_chunk
from tinyqmoe.compress.quant import unpack_bits
from tinyqmoe.errors import ChecksumWrong, TruncatedInput
from tinyqmoe.kernels.matvec import matmul_q8_rows
from tinyqmoe.weights.linear import Linear

# Fastest first, as measured (docs/streaming.md): fused overlaps reading, decoding and multiplying
# across threads, so it beats streamed while holding less; streamed is there by request (--source).
SOURCES = ("resident", "fused", "streamed")
RAW_CODEC_ID = codec_by_name("raw").id


class ChunkReader:
    """Reads and decodes chunks of a container with pread, never through a mapping."""

    def __init__(self, container, cold: bool = False):
        self.container = container
        self.path = container.path
        self.fd = os.open(container.path, os.O_RDONLY)
        self.cold = cold
        self._local = threading.local()
        self._lock = threading.Lock()
        self.decode_seconds = 0.0   # summed over threads: pread + checksum + decode

    def scratch(self, slot: str, n: int) -> np.ndarray:
        """This thread's reused uint8 buffer `slot` ("stored" or "decoded"), n bytes long."""
        buf = getattr(self._local, slot, None)
        if buf is None or buf.size < n:
            buf = np.empty(max(n, 1 << 16), np.uint8)
            setattr(self._local, slot, buf)
        return buf[:n]

    def read_into(self, entry, i: int, out: np.ndarray) -> np.ndarray:
        """Chunk i of `entry`, checked and decoded into `out` (uint8 [row_count, row_bytes])."""
        t0 = time.perf_counter()
        c = entry.chunks[i]
        off, size = int(c["offset"]), int(c["stored_size"])
        raw = int(c["codec"]) == RAW_CODEC_ID and size == out.size
        # a raw chunk is read straight into its destination; others into a buffer, then decoded
        view = memoryview(out.reshape(-1)) if raw else memoryview(self.scratch("stored", size))
        got = os.preadv(self.fd, [view], off)
        if got != size:
            raise TruncatedInput(f"{entry.name} chunk {i}: file ends {size - got} bytes early", self.path)
        if crc32(view) != int(c["crc32"]):
            raise ChecksumWrong(f"{entry.name} chunk {i}: checksum mismatch", self.path, field="crc32")
        if self.cold:
            os.posix_fadvise(self.fd, off, size, os.POSIX_FADV_DONTNEED)
        decoded = out.reshape(-1, entry.row_bytes) if raw else decode_chunk(entry, i, view, out, path=self.path)
        with self._lock:
            self.decode_seconds += time.perf_counter() - t0
        return decoded

    def read_tensor(self, name: str, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
        """A whole tensor's payload, uint8 [O, row_bytes], chunks decoded in parallel on `pool`."""
        e = self.container.tensor(name)
        out = np.empty((e.rows, e.row_bytes), np.uint8)

        def one(i):
            r0, n = e.chunk_rows(i)
            self.read_into(e, i, out[r0:r0 + n])

        list((pool.map if pool else map)(one, range(e.n_chunks)))
        return out

    def close(self) -> None:
        os.close(self.fd)


def _as_int8(raw: np.ndarray, bits: int) -> np.ndarray:
    return raw.view(np.int8) if bits == 8 else unpack_bits(raw, bits)


class ChunkedLinear:
    """A quantized linear whose rows stay in the file: each call reads, decodes and multiplies chunk by chunk."""

    def __init__(self, reader: ChunkReader, name: str, pool: ThreadPoolExecutor):
        c = reader.container
        self.reader, self.pool = reader, pool
        self.entry = c.tensor(name)
        self.scale = c.read_scale(name)                  # (O, G) f32: small, kept resident
        self.bits = self.entry.bits

    @property
    def shape(self):
        return self.entry.shape

    @property
    def nbytes(self) -> int:  # resident bytes
        return self.scale.nbytes

    def _chunk(self, i: int) -> np.ndarray:
        e = self.entry
        n = e.chunk_rows(i)[1]
        raw = self.reader.read_into(e, i, self.reader.scratch("decoded", n * e.row_bytes))
        return _as_int8(raw, self.bits)

    def _one(self, y, x, i):
        r0, n = self.entry.chunk_rows(i)
        matmul_q8_rows(y, self._chunk(i), self.scale[r0:r0 + n], x, r0)

    def __call__(self, x: np.ndarray, block_bytes: int = 0) -> np.ndarray:
        """x (T, I) f32 -> (T, O) f32. Each pool thread takes the next chunk not yet taken until none is
        left: dynamic, so a thread the OS preempts leaves its share to the others (a static split
        stalls on a busy machine), with one task per thread rather than per chunk."""
        y = np.empty((x.shape[0], self.entry.shape[0]), np.float32)
        x = np.ascontiguousarray(x)
        n = self.entry.n_chunks
        taken = itertools.count()   # next() on it is atomic under the GIL

        def worker(_):
            while (i := next(taken)) < n:
                self._one(y, x, i)

        list(self.pool.map(worker, range(min(n, self.pool._max_workers))))
        return y

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` as float32, decoding only the chunks that hold them (embedding lookup)."""
        e = self.entry
        out = np.empty((len(idx), e.shape[1]), np.float32)
        starts = e.chunks["row_start"].astype(np.int64)
        for k, r in enumerate(np.asarray(idx)):
            i = int(np.searchsorted(starts, r, side="right") - 1)
            q = self._chunk(i)[r - starts[i]]
            G = self.scale.shape[1]
            out[k] = (q.reshape(G, -1).astype(np.float32) * self.scale[r][:, None]).reshape(-1)
        return out


class _StreamedBase:
    """Embedding, final norm and LM head shared by the streamed and fused sources."""

    def __init__(self, container, threads: int, cold: bool):
        self.container = container
        self.config = container.config
        self.reader = ChunkReader(container, cold)
        self.pool = ThreadPoolExecutor(max(1, threads))
        self.embed = ChunkedLinear(self.reader, "model.embed_tokens.weight", self.pool)
        self.lm_head = (self.embed if self.config.tie_embeddings
                        else ChunkedLinear(self.reader, "lm_head.weight", self.pool))
        self.norm = container.read_float("model.norm.weight")
        self._norms = [(container.read_float(f"model.layers.{i}.input_layernorm.weight"),
                        container.read_float(f"model.layers.{i}.post_attention_layernorm.weight"))
                       for i in range(self.config.n_layers)]

    @property
    def decode_seconds(self) -> float:
        return self.reader.decode_seconds

    @property
    def stored_bytes(self) -> int:
        """Bytes of the file read per forward pass: every weight chunk once."""
        return sum(self.container.tensor(n).stored_bytes for n in self.container.names
                   if len(self.container.tensor(n).shape) == 2)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.reader.close()


class FusedSource(_StreamedBase):
    """Every linear multiplies chunk by chunk as it decodes: RAM holds one chunk per thread."""

    def __init__(self, container, threads: int = 1, cold: bool = False):
        super().__init__(container, threads, cold)
        self._layers = []
        for i in range(self.config.n_layers):
            p = f"model.layers.{i}."
            lin = {n: ChunkedLinear(self.reader, p + n, self.pool) for n in _LINEARS}
            self._layers.append(_StackedLayer(self._norms[i], lin))

    def layer(self, i: int):
        return self._layers[i]


_LINEARS = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")


class _Concat:
    """Several linears of one input applied as one (rows stacked): q|k|v and gate|up."""

    def __init__(self, parts):
        self.parts = parts

    def __call__(self, x, block_bytes=0):
        return np.concatenate([p(x) for p in self.parts], axis=1)


class _StackedLayer:
    """A Layer whose q|k|v and gate|up are applied part by part (any linears: chunked or int8)."""

    def __init__(self, norms, lin):
        self.attn_norm, self.ffn_norm = norms
        self.wqkv = _Concat([lin["self_attn.q_proj.weight"], lin["self_attn.k_proj.weight"],
                             lin["self_attn.v_proj.weight"]])
        self.wo = lin["self_attn.o_proj.weight"]
        self.w_gate_up = _Concat([lin["mlp.gate_proj.weight"], lin["mlp.up_proj.weight"]])
        self.w_down = lin["mlp.down_proj.weight"]


class StreamedSource(_StreamedBase):
    """Layer i decoded whole into one of two buffers just in time; layer i+1 decodes in the background."""

    def __init__(self, container, threads: int = 1, cold: bool = False, prefetch: bool = True):
        super().__init__(container, threads, cold)
        self.prefetch = prefetch
        self._buffers = [self._alloc_layer(0), self._alloc_layer(0)]
        self._fills = 0      # buffers alternate per fill, so the one being filled is never in use
        self._scales = [{n: container.read_scale(f"model.layers.{i}.{n}") for n in _LINEARS}
                        for i in range(self.config.n_layers)]
        self._loader = ThreadPoolExecutor(1)  # its thread starts at the first prefetch
        self._pending: dict[int, object] = {}

    def _alloc_layer(self, i: int) -> dict:
        c = self.container
        return {n: np.empty(c.tensor(f"model.layers.{i}.{n}").shape, np.int8) for n in _LINEARS}

    def _fill(self, i: int) -> _StackedLayer:
        buf = self._buffers[self._fills % 2]
        self._fills += 1
        p = f"model.layers.{i}."
        c = self.container
        jobs = []
        for n in _LINEARS:
            e = c.tensor(p + n)
            for k in range(e.n_chunks):
                jobs.append((e, k, buf[n]))
        list(self.pool.map(lambda j: self._decode(*j), jobs))
        scales = self._scales[i]
        return _StackedLayer(self._norms[i], {n: Linear(q=buf[n], scale=scales[n]) for n in _LINEARS})

    def _decode(self, e, k, dest):
        r0, n = e.chunk_rows(k)
        if e.bits == 8:
            self.reader.read_into(e, k, dest[r0:r0 + n].view(np.uint8))
        else:
            raw = np.empty((n, e.row_bytes), np.uint8)
            dest[r0:r0 + n] = unpack_bits(self.reader.read_into(e, k, raw), e.bits)

    def layer(self, i: int):
        L = self.config.n_layers
        fut = self._pending.pop(i, None)
        layer = fut.result() if fut is not None else self._fill(i)
        if self.prefetch and L > 1:
            # the next layer (wrapping to 0 for the next token) decodes while this one computes
            nxt = (i + 1) % L
            self._pending[nxt] = self._loader.submit(self._fill, nxt)
        return layer

    def close(self) -> None:
        for f in self._pending.values():
            f.result()
        self._pending.clear()
        self._loader.shutdown(wait=True)
        super().close()
