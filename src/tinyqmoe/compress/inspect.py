"""Account for every byte of a .tqm file, and verify one end to end.

`account(c)` splits the file into fixed header, data (scales, chunk payload, padding), index and
JSON header: the parts add up exactly to the file size, or the file is reported corrupt (an
overlap between sections). `verify(path)` checks every checksum, decodes every chunk and checks
that padding is zero, all through the one reader (compress/reader.py).
"""
from __future__ import annotations

import dataclasses
import os

from tinyqmoe.compress.reader import Container, open_container
from tinyqmoe.compress.container_format import FIXED_HEADER_SIZE
from tinyqmoe.errors import CorruptionDetected


@dataclasses.dataclass
class TensorRow:
    name: str
    shape: tuple
    qtype: str
    group: int
    codec: str
    n_values: int
    bf16_bytes: int        # the tensor as bf16 (2 bytes per value)
    quant_bytes: int       # the quantized payload, uncompressed (int8 / packed / f32)
    scale_bytes: int
    stored_bytes: int      # compressed payload
    entropy_bytes: float   # order-0 entropy bound of the payload (NaN if not recorded)
    zstd19_bytes: int      # zstd-19 size of the payload (-1 if not recorded)
    sqnr_db: float         # quantization SQNR (NaN for f32)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * (self.stored_bytes + self.scale_bytes) / self.n_values

    @property
    def ratio_bf16(self) -> float:
        return self.bf16_bytes / max(self.stored_bytes + self.scale_bytes, 1)


def tensor_rows(c: Container) -> list[TensorRow]:
    rows = []
    for name in c.names:
        e = c.tensor(name)
        st = e.stats
        rows.append(TensorRow(
            name, e.shape, e.qtype, e.group, e.codec, e.n_values, 2 * e.n_values, e.raw_bytes, e.scale_size,
            e.stored_bytes, float(st.get("entropy_bits", float("nan"))) / 8, int(st.get("zstd19_bytes", -1)),
            float(st.get("sqnr_db", float("nan")))))
    return rows


def account(c: Container) -> dict:
    """Bytes per part of the file; the parts sum to the file size. Raises on overlapping sections."""
    parts = {"fixed_header": FIXED_HEADER_SIZE, "scales": 0, "payload": 0, "padding": 0,
             "index": c.index_size, "json_header": c.json_size}
    pos = FIXED_HEADER_SIZE
    for off, size, kind in c.sections():
        if off < pos:
            raise CorruptionDetected(f"{kind} at {off} overlaps the previous section (ends at {pos})", c.path,
                                     field="offset")
        parts["padding"] += off - pos
        parts[kind] += size
        pos = off + size
    parts["padding"] += c.index_offset - pos
    total = sum(parts.values())
    assert total == c.size, (total, c.size)
    parts["file"] = c.size
    return parts


@dataclasses.dataclass
class SizeSummary:
    """A container's size in the one vocabulary of docs/conventions.md ("Sizes of compressed models")."""
    file_bytes: int
    n_weights: int          # every tensor's values (norms included)
    quantized_bytes: int    # quantized payload + scales, before the codec
    uncoded_bytes: int      # the same file with every chunk stored raw (codec "raw"), padding aside
    bf16_bytes: int         # every weight as bf16
    qtypes: str             # e.g. "int8", "int4", "int4,int8"

    @property
    def stored_bits_per_weight(self) -> float:
        """All in: 8 x file bytes / weights (header, index, scales, padding, tokenizer included)."""
        return 8.0 * self.file_bytes / self.n_weights

    @property
    def quantized_bits_per_weight(self) -> float:
        """Before the codec: 8 x (quantized payload + scales) / weights."""
        return 8.0 * self.quantized_bytes / self.n_weights

    def describe(self) -> str:
        """'150,061,426 bytes, 8.77 bits/weight as stored (all in); 1.09x larger than raw int8, 1.82x smaller
        than bf16'."""
        from tinyqmoe.units import ratio_words

        return (f"{self.file_bytes:,} bytes, {self.stored_bits_per_weight:.2f} bits/weight as stored (all in); "
                f"{ratio_words(self.file_bytes, self.uncoded_bytes, 'raw ' + self.qtypes)}, "
                f"{ratio_words(self.file_bytes, self.bf16_bytes, 'bf16')}")


def size_summary(c: Container) -> SizeSummary:
    parts, rows = account(c), tensor_rows(c)
    quantized = sum(r.quant_bytes + r.scale_bytes for r in rows)
    uncoded = parts["file"] - parts["padding"] - parts["payload"] - parts["scales"] + quantized
    qtypes = ",".join(sorted({r.qtype for r in rows if r.qtype != "f32"})) or "f32"
    return SizeSummary(parts["file"], sum(r.n_values for r in rows), quantized, uncoded,
                       sum(r.bf16_bytes for r in rows), qtypes)


def stored_bits_per_weight(path) -> float:
    """Bits per weight of a .tqm file as stored, all in: 8 x file bytes / weights (every tensor counted)."""
    with open_container(path) as c:
        return size_summary(c).stored_bits_per_weight


def verify(path, threads: int = 0) -> dict:
    """Open (the reader checks headers, index, records and padding), then read every chunk and scale
    through the same reader the engine uses. Returns the accounting; raises on any fault."""
    from concurrent.futures import ThreadPoolExecutor

    with open_container(path) as c, ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        parts = account(c)
        for name in c.names:
            if c.tensor(name).qtype == "f32":
                c.read_float(name, pool)
            else:
                c.read_quantized(name, pool)
        return {"tensors": len(c.names), "chunks": int(c.index.size), **parts}
