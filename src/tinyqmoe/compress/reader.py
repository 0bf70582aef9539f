"""THE reader of .tqm containers (docs/FORMAT.md): every check the format asks for lives here, and
every tool and weight source reads through it, so a file is accepted or refused identically by
`verify`, `inspect`, `load` and the resident, streamed and fused sources.

The reader walks the spec in order: fixed header (§3), chunk index (§4.2), JSON header (§4.1) and
tensor records (§4.1.1), the padding between data sections (§6: zero), then data on demand: scales
(§6.1) and chunks (§7: checksum, codec, payload layout of §5, a ternary field `10` refused). Bytes
are read with pread, never mapped, so the file's pages never count in the process's resident memory;
every offset and length is checked before use; bad bytes raise CorruptionDetected / ChecksumWrong /
TruncatedInput / UnsupportedParameter naming the file and the field. Reads are thread-safe.

    c = open_container("smol.tqm")     # or Container(path, cold=True): drop pages after each read
    c.config, c.tokenizer, c.names, c.header
    e = c.tensor(name)                 # TensorEntry: shape, qtype, group, chunk table (file offsets)
    c.read_chunk(e, i, out)            # chunk i checked and decoded into out: uint8 [row_count, row_bytes]
    c.read_chunk_int8(e, i, out)       # the same rows as int8 values (4-bit and ternary widened exactly)
    c.read_scale(name)                 # float32 [O, G]
    c.read_offset(name)                # float32 [O, G] (uint4), or None
    c.read_scales(name)                # float32 [O, G], or [O, 2, G] for uint4: scales then offsets per row
    c.read_quantized(name)             # QuantizedTensor, bit-identical to what was written
    c.read_float(name)                 # float32 (norms as stored; quantized tensors dequantized)

Shape letters: O rows (output channels), I inputs, B bytes per row, G scale groups per row.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from numba import njit

from tinyqmoe.compress import codecs
from tinyqmoe.compress.common import RAW, check_codec_id, crc32
from tinyqmoe.compress.container_format import (ALIGN, CHUNK_CHECKSUMS, CHUNK_RECORD_SIZES, FIXED_HEADER,
                                                FIXED_HEADER_SIZE, MAGIC, MAX_CHUNK_RAW, MAX_JSON_SIZE,
                                                MAX_TENSOR_BYTES, OFFSET_QTYPES, QTYPES, READ_MAJORS,
                                                SCALE_BYTES,
                                                chunk_checksum, chunk_records)
from tinyqmoe.compress.quant import QuantizedTensor, dequantize, int_values, unpack_bits
from tinyqmoe.errors import (ChecksumWrong, CorruptionDetected, FormatError, TruncatedInput,
                             UnsupportedParameter, UsageError)


@dataclasses.dataclass
class TensorEntry:
    """One tensor record (§4.1.1) with its slice of the chunk index (§4.2)."""
    name: str
    shape: tuple[int, ...]
    qtype: str                 # int8 | int4 | uint4 | ternary | f32
    bits: int                  # 8 | 4 | 2 | 32
    group: int                 # inputs per scale (0 for f32)
    scale_dtype: str | None    # f32 | f16 | None
    scale_offset: int          # file offset of the scales (§6.1)
    scale_size: int
    scale_crc32: int
    rows: int                  # O
    row_bytes: int             # B
    chunks: np.ndarray         # CHUNK_DTYPE [n_chunks]: offset, stored_size, raw_size, row_start, row_count, check, codec
    stats: dict
    codec: str                 # informative: the codec of most chunks

    @property
    def n_chunks(self) -> int:
        return int(self.chunks.size)

    @property
    def raw_bytes(self) -> int:
        return self.rows * self.row_bytes

    @property
    def stored_bytes(self) -> int:
        return int(self.chunks["stored_size"].sum(dtype=np.int64))

    @property
    def n_values(self) -> int:
        return int(np.prod(self.shape))

    def chunk_rows(self, i: int) -> tuple[int, int]:
        """(row_start, row_count) of chunk i."""
        return int(self.chunks[i]["row_start"]), int(self.chunks[i]["row_count"])

    def scale_shape(self) -> tuple[int, int]:
        return (self.shape[0], self.shape[1] // self.group)

    @property
    def has_offset(self) -> bool:
        """uint4: an offset per group beside each scale (§6.1)."""
        return self.qtype in OFFSET_QTYPES

    @property
    def signed(self) -> bool:
        """Are the payload's fields two's complement (int8, int4, ternary) rather than unsigned (uint4)?"""
        return self.qtype not in OFFSET_QTYPES


def _field(d: dict, key: str, kind, where: str, path):
    if key not in d:
        raise CorruptionDetected(f"{where}: missing key {key!r}", path, field=key)
    v = d[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise CorruptionDetected(f"{where}: {key!r} has the wrong type", path, field=key)
    return v


def _int(d, key, where, path, lo=0, hi=(1 << 63) - 1) -> int:
    v = _field(d, key, int, where, path)
    if not lo <= v <= hi:
        raise CorruptionDetected(f"{where}: {key} = {v} is out of range", path, field=key)
    return v


class Container:
    """An open .tqm file, read with pread. Use as a context manager or call close()."""

    def __init__(self, path: str | Path, cold: bool = False, storage_bw: float | None = None):
        self.path = Path(path)
        self.cold = cold            # drop the pages of each chunk from the page cache after reading it
        self.storage = StorageThrottle(storage_bw) if storage_bw else None
        self.fd = None
        self.bytes_read = 0         # chunk bytes read so far (all threads)
        self.decode_seconds = 0.0   # pread + checksum + decode, summed over threads
        self._lock = threading.Lock()
        self._local = threading.local()
        if self.path.is_dir():
            raise UsageError("is a directory, not a .tqm container", self.path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            from tinyqmoe.errors import ModelNotFound
            raise ModelNotFound("no such file", self.path) from None
        except OSError as exc:
            raise UsageError(f"cannot read: {exc.strerror}", self.path) from None
        try:
            self.size = os.fstat(self.fd).st_size
            if self.size < FIXED_HEADER_SIZE:
                raise TruncatedInput(f"file has {self.size} bytes, shorter than the 64-byte header", self.path,
                                     field="header")
            self._read_fixed_header()
            self._read_index()
            self._read_json()
            self._read_tensors()
            self._check_padding()
        except BaseException:
            self.close()
            raise

    def _pread(self, offset: int, size: int, out=None) -> memoryview:
        """Exactly `size` bytes at `offset` (into `out`, a writable buffer of that size, if given)."""
        buf = memoryview(out).cast("B") if out is not None else memoryview(bytearray(size))
        got = 0
        while got < size:
            n = os.preadv(self.fd, [buf[got:]], offset + got)
            if n <= 0:
                raise TruncatedInput(f"file ends {size - got} bytes before [{offset}, {offset + size})", self.path)
            got += n
        return buf

    # ---- §3 fixed header
    def _read_fixed_header(self) -> None:
        p = self.path
        raw = bytes(self._pread(0, FIXED_HEADER_SIZE))
        if raw[:8] != MAGIC:
            raise CorruptionDetected("not a .tqm container (bad magic)", p, field="magic")
        if crc32(raw[:60]) != int.from_bytes(raw[60:64], "little"):
            raise ChecksumWrong("fixed header checksum mismatch", p, field="header_crc32")
        (_, major, minor, flags, index_offset, index_size, json_offset, json_size,
         index_crc, json_crc, reserved) = FIXED_HEADER.unpack(raw[:60])
        if major not in READ_MAJORS:
            known = " and ".join(f"{m}.x" for m in READ_MAJORS)
            raise UnsupportedParameter(f"format version {major}.{minor} (this reader knows {known})",
                                       p, field="version_major")
        if flags or reserved:
            raise CorruptionDetected("reserved header field is not zero", p, field="flags" if flags else "reserved")
        if index_offset < FIXED_HEADER_SIZE or index_offset % ALIGN:
            raise CorruptionDetected(f"index_offset {index_offset} is not a multiple of 64 >= 64", p, field="index_offset")
        record = CHUNK_RECORD_SIZES[major]
        if index_size % record:
            raise CorruptionDetected(f"index_size {index_size} is not a multiple of {record}", p, field="index_size")
        if json_offset != index_offset + index_size:
            raise CorruptionDetected("json_offset does not follow the index", p, field="json_offset")
        if not 2 <= json_size <= MAX_JSON_SIZE:
            raise CorruptionDetected(f"json_size {json_size} is out of range", p, field="json_size")
        end = json_offset + json_size
        if end > self.size:
            raise TruncatedInput(f"file ends at {self.size}, the header says {end}", p, field="json_size")
        if end < self.size:
            raise CorruptionDetected(f"{self.size - end} bytes after the end of the container", p, field="json_size")
        self.version = (major, minor)
        self.checksum = CHUNK_CHECKSUMS[major]     # of each chunk: crc32 (1.x) or xxh64 (2.x)
        self.index_offset, self.index_size = index_offset, index_size
        self.json_offset, self.json_size = json_offset, json_size
        self._index_crc, self._json_crc = index_crc, json_crc

    # ---- §4.2 chunk index
    def _read_index(self) -> None:
        raw = bytes(self._pread(self.index_offset, self.index_size))
        if crc32(raw) != self._index_crc:
            raise ChecksumWrong("chunk index checksum mismatch", self.path, field="index_crc32")
        self.index = chunk_records(raw, self.version[0])

    # ---- §4.1 JSON header
    def _read_json(self) -> None:
        p = self.path
        raw = bytes(self._pread(self.json_offset, self.json_size))
        if crc32(raw) != self._json_crc:
            raise ChecksumWrong("JSON header checksum mismatch", p, field="json_crc32")
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:   # RecursionError: nested too deeply
            raise CorruptionDetected(f"JSON header is not valid UTF-8 JSON ({exc})", p, field="json") from None
        if not isinstance(header, dict):
            raise CorruptionDetected("JSON header is not an object", p, field="json")
        if header.get("format") != "tqm":
            raise CorruptionDetected("JSON header format is not 'tqm'", p, field="format")
        self.header = header
        from tinyqmoe.model.tokenizer import TokenizerSpec
        from tinyqmoe.model.config import LlamaConfig
        from tinyqmoe.errors import UnsupportedModel

        cfg = _field(header, "config", dict, "header", p)
        try:
            self.config = LlamaConfig.from_hf_dict(cfg, p)
        except UnsupportedModel as exc:
            raise CorruptionDetected(f"config: {exc.message}", p, field="config") from None
        tok = header.get("tokenizer")
        if tok is not None and not (isinstance(tok, dict) and isinstance(tok.get("tokenizer_json"), str)):
            raise CorruptionDetected("tokenizer is not an object with tokenizer_json", p, field="tokenizer")
        self.tokenizer = TokenizerSpec.from_dict(tok, p) if tok is not None else None

    # ---- §4.1.1 tensor records
    def _read_tensors(self) -> None:
        p = self.path
        recs = _field(self.header, "tensors", list, "header", p)
        self._entries: dict[str, TensorEntry] = {}
        n_records = self.index.size
        next_chunk = 0
        for k, r in enumerate(recs):
            if not isinstance(r, dict):
                raise CorruptionDetected(f"tensor record {k} is not an object", p, field="tensors")
            e = self._check_tensor(r, k, next_chunk, n_records)
            next_chunk += e.n_chunks
            self._entries[e.name] = e
        if next_chunk != n_records:
            raise CorruptionDetected(f"tensors use {next_chunk} of {n_records} chunk records", p, field="n_chunks")
        from tinyqmoe.model.config import check_tensors   # the config must describe these tensors exactly

        check_tensors(self.config, {n: e.shape for n, e in self._entries.items()}, p)

    def _check_tensor(self, r: dict, k: int, first_expected: int, n_records: int) -> TensorEntry:
        p = self.path
        name = _field(r, "name", str, f"tensor {k}", p)
        where = f"tensor {name!r}"
        if name in self._entries:
            raise CorruptionDetected(f"{where} appears twice", p, field="name")
        shape = _field(r, "shape", list, where, p)
        if not 1 <= len(shape) <= 2 or not all(isinstance(x, int) and not isinstance(x, bool)
                                                and 1 <= x < (1 << 31) for x in shape):
            raise CorruptionDetected(f"{where}: bad shape {shape}", p, field="shape")
        qtype = _field(r, "qtype", str, where, p)
        if qtype not in QTYPES:
            raise UnsupportedParameter(f"{where}: unknown qtype {qtype!r}", p, field="qtype")
        bits = QTYPES[qtype]
        group = _int(r, "group", where, p)
        rows = _int(r, "rows", where, p, 1, 1 << 31)
        row_bytes = _int(r, "row_bytes", where, p, 1, 1 << 40)
        scale_dtype = r.get("scale_dtype")
        so = _int(r, "scale_offset", where, p)
        ss = _int(r, "scale_size", where, p)
        sc = _int(r, "scale_crc32", where, p, 0, 0xFFFFFFFF)
        first = _int(r, "first_chunk", where, p)
        n = _int(r, "n_chunks", where, p, 1, n_records)

        def bad(msg, fld):
            raise CorruptionDetected(f"{where}: {msg}", p, field=fld)

        if rows != (shape[0] if len(shape) == 2 else 1):
            bad(f"rows {rows} does not match shape {shape}", "rows")
        if rows * row_bytes > MAX_TENSOR_BYTES:
            raise UnsupportedParameter(f"{where}: {rows * row_bytes} bytes is too large", p, field="row_bytes")
        if qtype == "f32":
            if row_bytes != 4 * (int(np.prod(shape)) // rows):
                bad(f"row_bytes {row_bytes} does not match shape {shape}", "row_bytes")
            if group or scale_dtype is not None or so or ss or sc:
                bad("an f32 tensor has scale fields", "scale_offset")
        else:
            if len(shape) != 2:
                bad(f"a quantized tensor must be 2-D, shape is {shape}", "shape")
            o, i = shape
            if group < 1 or i % group:
                bad(f"group {group} does not divide {i}", "group")
            if i % (8 // bits) or row_bytes != i * bits // 8:
                bad(f"row_bytes {row_bytes} does not match {i} inputs of {bits} bits", "row_bytes")
            if scale_dtype not in SCALE_BYTES:
                bad(f"unknown scale_dtype {scale_dtype!r}", "scale_dtype")
            per_group = (2 if qtype in OFFSET_QTYPES else 1) * SCALE_BYTES[scale_dtype]   # uint4: + offsets
            if ss != o * (i // group) * per_group:
                bad(f"scale_size {ss} does not match shape and group"
                    + (" (a scale and an offset per group)" if qtype in OFFSET_QTYPES else ""), "scale_size")
            if so < FIXED_HEADER_SIZE or so % ALIGN or so + ss > self.index_offset:
                bad(f"scales [{so}, {so + ss}) lie outside the data area", "scale_offset")
        if first != first_expected or first + n > n_records:
            bad(f"chunk range {first}+{n} does not follow the previous tensor's", "first_chunk")
        chunks = self.index[first:first + n]
        self._check_chunks(chunks, rows, row_bytes, where)
        codec = r.get("codec") if isinstance(r.get("codec"), str) else "?"
        stats = r.get("stats") if isinstance(r.get("stats"), dict) else {}
        return TensorEntry(name, tuple(shape), qtype, bits, group, scale_dtype, so, ss, sc, rows, row_bytes,
                           chunks, stats, codec)

    def _check_chunks(self, chunks: np.ndarray, rows: int, row_bytes: int, where: str) -> None:
        """§4.2: whole rows in order, sizes consistent, extents inside the data area, known codecs."""
        p = self.path
        row = 0
        for j, c in enumerate(chunks):
            fld = f"{where} chunk {j}"
            if c["reserved"].any():
                raise CorruptionDetected(f"{fld}: reserved bytes are not zero", p, field="reserved")
            check_codec_id_at(int(c["codec"]), p, fld)
            start, count = int(c["row_start"]), int(c["row_count"])
            if start != row or count < 1 or start + count > rows:
                raise CorruptionDetected(f"{fld}: rows [{start}, {start + count}) do not continue at row {row}",
                                         p, field="row_start")
            if int(c["raw_size"]) != count * row_bytes:
                raise CorruptionDetected(f"{fld}: raw_size {int(c['raw_size'])} != {count} rows x {row_bytes}",
                                         p, field="raw_size")
            if int(c["raw_size"]) > MAX_CHUNK_RAW:
                raise UnsupportedParameter(f"{fld}: raw_size above 2^31", p, field="raw_size")
            off, size = int(c["offset"]), int(c["stored_size"])
            if off < FIXED_HEADER_SIZE or off + size > self.index_offset:
                raise CorruptionDetected(f"{fld}: bytes [{off}, {off + size}) lie outside the data area",
                                         p, field="offset")
            row = start + count
        if row != rows:
            raise CorruptionDetected(f"{where}: chunks end at row {row}, the tensor has {rows}", p, field="row_count")

    # ---- §6 data sections: whatever lies between them is padding, and padding is zero
    def sections(self) -> list[tuple[int, int, str]]:
        """Every data extent (offset, size, kind) in file order; kind is 'scales' or 'payload'."""
        out = []
        for e in self._entries.values():
            if e.scale_size:
                out.append((e.scale_offset, e.scale_size, "scales"))
            out.extend((int(c["offset"]), int(c["stored_size"]), "payload") for c in e.chunks)
        out.sort()
        return out

    def _check_padding(self) -> None:
        pos = FIXED_HEADER_SIZE
        for off, size, kind in self.sections() + [(self.index_offset, 0, "index")]:
            if off < pos:
                raise CorruptionDetected(f"{kind} at {off} overlaps the previous section (ends at {pos})", self.path,
                                         field="offset")
            if off > pos and np.frombuffer(self._pread(pos, off - pos), np.uint8).any():
                raise CorruptionDetected(f"padding bytes [{pos}, {off}) are not zero", self.path, field="padding")
            pos = off + size

    # ---- public API
    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def tensor(self, name: str) -> TensorEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(f"no tensor {name!r} in the container", self.path) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def scratch(self, slot: str, n: int) -> np.ndarray:
        """This thread's reused uint8 buffer `slot`, n bytes long: one per thread and slot for the whole
        file, so RAM holds a few chunks per thread whatever the number of tensors."""
        buf = getattr(self._local, slot, None)
        if buf is None or buf.size < n:
            buf = np.empty(max(n, 1 << 16), np.uint8)
            setattr(self._local, slot, buf)
        return buf[:n]

    # ---- §7 chunks
    def read_chunk(self, e: TensorEntry, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Chunk i of `e` read, checksum checked, decoded and its payload checked (§5) into `out` (uint8,
        raw_size bytes, C-contiguous; allocated if None) -> uint8 [row_count, row_bytes]."""
        t0 = time.perf_counter()
        if not 0 <= i < e.n_chunks:
            raise UsageError(f"{e.name} has {e.n_chunks} chunks, asked for chunk {i}", self.path)
        c = e.chunks[i]
        off, size, raw_size = int(c["offset"]), int(c["stored_size"]), int(c["raw_size"])
        if out is None:
            out = np.empty(raw_size, np.uint8)
        if out.dtype != np.uint8 or out.size != raw_size or not out.flags.c_contiguous:
            raise UsageError(f"out must be a contiguous uint8 array of {raw_size} bytes")
        flat = out.reshape(-1)
        direct = int(c["codec"]) == RAW and size == raw_size    # a raw chunk is read straight into place
        src = self._pread(off, size, flat if direct else self.scratch("stored", size))
        if chunk_checksum(self.version[0], src, int(c["codec"]), raw_size) != int(c["check"]):
            raise ChecksumWrong(f"{e.name} chunk {i}: checksum mismatch", self.path, field=self.checksum)
        if self.cold:
            os.posix_fadvise(self.fd, off, size, os.POSIX_FADV_DONTNEED)
        if self.storage is not None:
            self.storage.wait(t0, size)
        if not direct:
            try:
                codecs.decode(int(c["codec"]), src, raw_size, flat)
            except FormatError as exc:
                if exc.path is not None:
                    raise
                raise type(exc)(f"{e.name} chunk {i}: {exc.message}", self.path, field=f"{e.name} chunk {i}") from None
        if e.qtype == "ternary" and ternary_has_10(flat):
            raise CorruptionDetected(f"{e.name} chunk {i}: a ternary field holds 0b10", self.path, field="payload")
        with self._lock:
            self.bytes_read += size
            self.decode_seconds += time.perf_counter() - t0
        return flat.reshape(int(c["row_count"]), e.row_bytes)

    def read_chunk_int8(self, e: TensorEntry, i: int, out: np.ndarray) -> np.ndarray:
        """Chunk i of a quantized tensor as int8 values into `out` (int8 [row_count, I]): int8 payloads
        decode in place, 4-bit and ternary ones are widened exactly (uint4's fields to 0..15: its
        offsets are read_offset's)."""
        if e.bits == 8:
            self.read_chunk(e, i, out.view(np.uint8))
        else:
            packed = self.read_chunk(e, i, self.scratch("packed", int(e.chunks[i]["raw_size"])))
            out[:] = unpack_bits(packed, e.bits, signed=e.signed)
        return out

    def read_payload(self, name: str, pool=None, alloc=np.empty) -> np.ndarray:
        """The whole decoded payload: uint8 [O, B] (from `alloc(shape, dtype)`), chunks decoded in
        parallel on `pool` (nogil numba)."""
        e = self.tensor(name)
        out = alloc((e.rows, e.row_bytes), np.uint8)

        def one(i):
            r, n = e.chunk_rows(i)
            self.read_chunk(e, i, out[r:r + n])

        list((pool.map if pool is not None and e.n_chunks > 1 else map)(one, range(e.n_chunks)))
        return out

    def read_scales(self, name: str) -> np.ndarray:
        """§6.1: the scales section as float32, crc checked: [O, I // group] scales, finite and >= 0, or for
        uint4 [O, 2, I // group] (row o: its scales, then its offsets, finite, either sign: format 2.2),
        C-contiguous: the layout the 4-bit kernels take (kernels/rowdot.py)."""
        e = self.tensor(name)
        if e.qtype == "f32":
            raise UsageError(f"{name} is an f32 tensor: it has no scales", self.path)
        raw = self._pread(e.scale_offset, e.scale_size)
        if crc32(raw) != e.scale_crc32:
            raise ChecksumWrong(f"{name}: scales checksum mismatch", self.path, field="scale_crc32")
        dt = "<f4" if e.scale_dtype == "f32" else "<f2"
        o, g = e.scale_shape()
        values = np.frombuffer(raw, dt).astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise CorruptionDetected(f"{name}: a scale or offset is infinite or NaN", self.path, field="scale")
        values = values.reshape((o, 2, g) if e.has_offset else (o, g))
        if not e.has_offset and np.any(values < 0):
            raise CorruptionDetected(f"{name}: a scale is negative, infinite or NaN", self.path, field="scale")
        return values

    def read_scale(self, name: str) -> np.ndarray:
        """§6.1: float32 [O, I // group], crc checked, finite (and >= 0 but for uint4)."""
        s = self.read_scales(name)
        return np.ascontiguousarray(s[:, 0]) if s.ndim == 3 else s

    def read_offset(self, name: str) -> np.ndarray | None:
        """§6.1: uint4's offsets, float32 [O, I // group] (finite, any sign); None for other qtypes."""
        if not self.tensor(name).has_offset:
            return None
        return np.ascontiguousarray(self.read_scales(name)[:, 1])

    def read_quantized(self, name: str, pool=None, alloc=np.empty) -> QuantizedTensor:
        """The quantized tensor exactly as written: q int8 [O, I] (8 bits) or packed uint8 [O, B]
        (the payload from `alloc(shape, dtype)`)."""
        e = self.tensor(name)
        if e.qtype == "f32":
            raise UsageError(f"{name} is stored as f32, not quantized (use read_float)", self.path)
        payload = self.read_payload(name, pool, alloc)
        q = payload.view(np.int8) if e.bits == 8 else payload
        s = self.read_scales(name)
        scale, offset = (np.ascontiguousarray(s[:, 0]), np.ascontiguousarray(s[:, 1])) if s.ndim == 3 else (s, None)
        return QuantizedTensor(q=q, scale=scale, group=e.group, bits=e.bits, scale_dtype=e.scale_dtype,
                               offset=offset)

    def read_int8(self, name: str, pool=None) -> tuple[np.ndarray, np.ndarray]:
        """A quantized tensor as (int8 [O, I], float32 scales [O, G]); 4-bit and ternary widened exactly
        (uint4's fields to 0..15: its offsets are read_offset's)."""
        qt = self.read_quantized(name, pool)
        return np.ascontiguousarray(int_values(qt), dtype=np.int8), np.ascontiguousarray(qt.scale, dtype=np.float32)

    def read_float(self, name: str, pool=None) -> np.ndarray:
        """float32 in the tensor's shape: f32 tensors as stored, quantized ones dequantized."""
        e = self.tensor(name)
        if e.qtype != "f32":
            return dequantize(self.read_quantized(name, pool))
        return self.read_payload(name, pool).view("<f4").astype(np.float32).reshape(e.shape)

    def close(self) -> None:
        """Release the file."""
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_codec_id_at(codec_id: int, path, where: str) -> None:
    try:
        check_codec_id(codec_id)
    except UnsupportedParameter as exc:
        raise UnsupportedParameter(f"{where}: {exc.message}", path, field="codec") from None


class StorageThrottle:
    """Emulates storage of `bytes_per_second` over a warm page cache: the device streams one read at a
    time, so a read of n bytes issued at t0 completes at max(t0, when the previous read completed)
    + n / bytes_per_second, and the reader waits until then. Work done meanwhile (decoding,
    multiplying other chunks) overlaps the transfer, as it would on a device."""

    def __init__(self, bytes_per_second: float):
        self.rate = float(bytes_per_second)
        self.free_at = 0.0
        self.lock = threading.Lock()

    def wait(self, t0: float, n: int) -> None:
        with self.lock:
            self.free_at = max(self.free_at, t0) + n / self.rate
            done = self.free_at
        delay = done - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


@njit(cache=True, nogil=True)
def ternary_has_10(payload):
    """True if any 2-bit field of the packed ternary payload (uint8 [n]) holds 0b10 (§5: corrupt)."""
    for i in range(payload.size):
        b = payload[i]
        if ((b & 3) == 2) or (((b >> 2) & 3) == 2) or (((b >> 4) & 3) == 2) or ((b >> 6) == 2):
            return True
    return False


def open_container(path: str | Path, cold: bool = False, storage_bw: float | None = None) -> Container:
    return Container(path, cold, storage_bw)
