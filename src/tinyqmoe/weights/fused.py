"""The fused source: every linear multiplies chunk by chunk as it decodes; RAM holds one chunk per thread.

Each linear (q|k|v and gate|up stacked) is one compiled call (weights/fused_loop.py) that reads,
checks, decodes and multiplies all its chunks with no Python per chunk; a chunk whose codec the loop
cannot decode makes that linear fall back to the chunk-by-chunk reader path (weights/chunked.py).

Chunks are read with pread into reused buffers (compress/reader.py), so the file's pages never count
in the process's memory; with `cold=True` the reader also drops them from the page cache, so every
token reads its weights from storage, as on a device whose RAM cannot cache the model.
"""
from __future__ import annotations

import time

import numpy as np

from tinyqmoe.errors import CorruptionDetected
from tinyqmoe.kernels.gemm_i8 import pack_activations
from tinyqmoe.runtime import SERIAL, Runtime
from tinyqmoe.weights.chunked import ChunkedLinear, ConcatLinear, entry_takes_int8_prefill
from tinyqmoe.weights.linear import Layer

NO_ACTIVATIONS = (np.zeros((0, 0, 8, 2), np.int16), np.zeros((0, 0, 8), np.float32), np.zeros((0, 0, 8), np.float32))   # fused_linear without a panel

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


SCRATCH_DTYPES = {"stored": np.uint8, "raw": np.uint8, "wide": np.int8, "ent": np.int64}


def scratch_sizes(entries) -> dict[str, int]:
    """Per-thread buffer lengths of the compiled loop for these (2-D) tensors: the largest stored and
    decoded chunk, its rows widened to int8, and an LZW dictionary (at most raw_size + 258 entries)."""
    max_raw = max(int(e.chunks["raw_size"].max()) for e in entries)
    wide = max((int(e.chunks["row_count"].max()) * e.shape[1] for e in entries if e.bits < 8), default=0)
    return {"stored": max(int(e.chunks["stored_size"].max()) for e in entries), "raw": max_raw,
            "wide": max(wide, 1), "ent": max_raw + 260}


def scratch_bytes_per_thread(entries) -> int:
    return sum(n * np.dtype(SCRATCH_DTYPES[k]).itemsize for k, n in scratch_sizes(entries).items())


class FusedScratch:
    """Per-thread buffers for the compiled loop, sized for the largest chunk of the file."""

    def __init__(self, reader, threads: int):
        entries = [reader.tensor(n) for n in reader.names if len(reader.tensor(n).shape) == 2]
        sizes = scratch_sizes(entries)
        self.stored, self.raw, self.wide, self.ent = (np.empty((threads, sizes[k]), SCRATCH_DTYPES[k])
                                                      for k in ("stored", "raw", "wide", "ent"))

    @property
    def nbytes(self) -> int:
        return self.stored.nbytes + self.raw.nbytes + self.wide.nbytes + self.ent.nbytes


def fusable(reader, names) -> bool:
    """Whether the compiled loop can run these tensors stacked: codecs it decodes, one kind of payload
    (all f32 or all of one qtype with the same scale groups; uint4 only in rows of whole 32-input blocks,
    which it multiplies packed) and one input size."""
    from tinyqmoe.compress.common import LZW, RANS, RAW, TANS, ZSTD
    from tinyqmoe.weights.fused_loop import HAVE_ZSTD

    entries = [reader.tensor(n) for n in names]
    ok_codecs = {RAW, LZW, RANS, TANS} | ({ZSTD} if HAVE_ZSTD else set())
    if any(int(c) not in ok_codecs for e in entries for c in e.chunks["codec"]):
        return False
    kinds = {e.qtype if e.qtype in ("f32", "uint4") else "signed" for e in entries}   # offsets or not
    if len({e.shape[1] for e in entries}) != 1 or len(kinds) != 1:
        return False
    if entries[0].qtype == "uint4":
        from tinyqmoe.kernels.rowdot import fits

        if not all(fits(e.shape[1], e.group) for e in entries):
            return False
    return entries[0].qtype == "f32" or len({e.shape[1] // e.group for e in entries}) == 1


class FusedLinear:
    """Tensors `names` stacked by rows, multiplied chunk by chunk in one compiled call."""

    def __init__(self, reader, names: list[str], scratch: FusedScratch):
        self.reader, self.scratch = reader, scratch
        entries = [reader.tensor(n) for n in names]
        rows, where, base = [], [], 0
        for e in entries:
            bits = 32 if e.qtype == "f32" else e.bits
            for k, c in enumerate(e.chunks):
                rows.append((int(c["offset"]), int(c["stored_size"]), int(c["raw_size"]),
                             base + int(c["row_start"]), int(c["row_count"]), int(c["codec"]), bits))
                where.append((e, k))
            base += e.shape[0]
        self.table = np.array(rows, np.int64)
        self.checks = np.concatenate([e.chunks["check"] for e in entries]).astype(np.uint64)
        self.xxh = reader.checksum == "xxh64"
        self.where = where
        self.stored_total = int(self.table[:, 1].sum())
        self.shape = (base, entries[0].shape[1])
        self.takes_int8_prefill = entry_takes_int8_prefill(entries[0])   # `fusable`: the entries are all alike
        if entries[0].qtype == "f32":
            self.scales = np.ones((1, 1), np.float32)
        else:
            # (O, G), or (O, 2, G) for uint4: per row its scales then its offsets (kernels/rowdot.py)
            self.scales = np.ascontiguousarray(np.concatenate([reader.read_scales(n) for n in names]))

    @property
    def nbytes(self) -> int:
        return self.scales.nbytes + self.table.nbytes + self.checks.nbytes

    def __call__(self, x: np.ndarray, rt: Runtime = SERIAL, out: np.ndarray | None = None,
                 stream: bool = True) -> np.ndarray:
        from tinyqmoe.weights.fused_loop import fused_linear

        y = np.empty((x.shape[0], self.shape[0]), np.float32) if out is None else out
        status = np.zeros(len(self.table), np.int64)
        s, r = self.scratch, self.reader
        t0 = time.perf_counter()
        panel = not stream and rt.int8_prefill and self.takes_int8_prefill
        xp, xsp, xb = pack_activations(x) if panel else NO_ACTIVATIONS
        fused_linear(y, np.ascontiguousarray(x), r.fd, r.cold, self.table, self.checks, self.xxh, self.scales, s.stored,
                     s.raw, s.wide, s.ent, status, panel, xp, xsp, xb)
        with r._lock:
            r.bytes_read += self.stored_total
        if r.storage is not None:
            r.storage.wait(t0, self.stored_total)
        if status.any():
            self._raise(int(np.nonzero(status)[0][0]))
        return y

    def _raise(self, i: int) -> None:
        """The reader reads the failing chunk again and raises its own typed error for it."""
        e, k = self.where[i]
        self.reader.read_chunk(e, k)
        raise CorruptionDetected(f"{e.name} chunk {k}: could not be decoded", self.reader.path, field=e.name)


class FusedSource(ChunkedSourceBase):
    kind = "fused"

    def __init__(self, reader, rt: Runtime):
        super().__init__(reader, rt)
        self.scratch = FusedScratch(reader, rt.threads)
        self._layers = []
        for i in range(self.config.n_layers):
            p = f"model.layers.{i}."
            groups = {"qkv": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
                      "o": ("self_attn.o_proj.weight",), "gate_up": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
                      "down": ("mlp.down_proj.weight",)}
            lin = {k: self._linear([p + n for n in names]) for k, names in groups.items()}
            self._layers.append(Layer(attn_norm=self.norms[i][0], wqkv=lin["qkv"], wo=lin["o"],
                                      ffn_norm=self.norms[i][1], w_gate_up=lin["gate_up"], w_down=lin["down"]))
        if fusable(reader, [self.lm_head.entry.name]):
            self.lm_head = FusedLinear(reader, [self.lm_head.entry.name], self.scratch)

    def _linear(self, names: list[str]):
        if fusable(self.reader, names):
            return FusedLinear(self.reader, names, self.scratch)
        parts = [ChunkedLinear(self.reader, n, self.rt) for n in names]
        return parts[0] if len(parts) == 1 else ConcatLinear(parts)

    def layer(self, i: int) -> Layer:
        return self._layers[i]

    @property
    def takes_int8_prefill(self) -> bool:
        return self._layers[0].takes_int8_prefill

    @property
    def bytes_held(self) -> int:
        return super().bytes_held + self.scratch.nbytes + sum(
            l.wqkv.nbytes + l.wo.nbytes + l.w_gate_up.nbytes + l.w_down.nbytes for l in self._layers)
