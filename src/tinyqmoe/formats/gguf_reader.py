"""A GGUF container reader: header, metadata, tensor directory; tensor bytes memory-mapped.

GGUF (llama.cpp's file format, versions 2 and 3, little-endian), in file order:

  field            size            meaning
  magic            4               b"GGUF"
  version          u32             2 or 3 (1 used 32-bit counts and is not read)
  tensor_count     u64
  kv_count         u64
  kv[kv_count]                     key: string, value_type: u32, value (below)
  tensor_info[tensor_count]        name: string, n_dims: u32 (1..4), dims: u64[n_dims],
                                   ggml_type: u32, offset: u64 (from the data section, aligned)
  padding                          to `general.alignment` (default 32)
  data section                     tensor bytes

  string = u64 length + UTF-8 bytes; array = u32 element type + u64 count + elements.
  dims[0] is the contiguous axis: a [rows, cols] matrix is stored with dims (cols, rows).

The reader checks every length before it reads, so a truncated or corrupt file raises
`TruncatedInput` / `CorruptionDetected` naming the file instead of a numpy traceback. It does not
use `gguf.GGUFReader`: that one builds a numpy view per array element and takes ~2 s on the
default model's 49k-token vocabulary; this one takes ~0.1 s. Tensor bytes are not read here.
"""
from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from tinyqmoe.errors import CorruptionDetected, ModelNotFound, TruncatedInput, UnsupportedParameter
from tinyqmoe.formats.gguf_dequant import LAYOUTS

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_NESTING = 8    # arrays of arrays: llama.cpp writes one level; deeper is a forgery (and Python recursion)

# metadata value types: id -> (struct format, width); 8 string and 9 array are variable-sized
_SCALAR = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
           6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
          10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]   # GGUF order: dims[0] is the contiguous axis
    ggml_type: int          # GGML type id (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, 30 BF16, ...)
    offset: int             # absolute position in the file
    nbytes: int | None      # None when the type is unknown to gguf_dequant.LAYOUTS

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy / Hugging Face order ([rows, cols])."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


class _Cursor:
    """Reads little-endian fields from a buffer, checking each length first."""

    def __init__(self, buf, path: str):
        self.buf, self.pos, self.end, self.path = buf, 0, len(buf), path

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise TruncatedInput(f"file ends inside {what} (at byte {self.pos}, needs {n} more)", self.path)

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self, what: str) -> str:
        n = self.u64(what)
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptionDetected(f"{what} is not valid UTF-8", self.path) from None

    def value(self, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALAR:
            fmt, width = _SCALAR[vtype]
            self.need(width, what)
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
            self.pos += width
            return v
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            etype, count = self.u32(what), self.u64(what)
            if depth >= MAX_NESTING:
                raise CorruptionDetected(f"{what} nests arrays more than {MAX_NESTING} deep", self.path)
            if etype in _NUMPY:  # numeric arrays come back as numpy arrays
                width = _SCALAR[etype][1]
                self.need(count * width, what)
                arr = np.frombuffer(self.buf, dtype=_NUMPY[etype], count=count, offset=self.pos).copy()
                self.pos += count * width
                return arr
            self.need(count * 8, what)  # every string or array element takes at least 8 bytes
            if etype == _STRING:
                return self.strings(count, what)
            return [self.value(etype, what, depth + 1) for _ in range(count)]
        raise CorruptionDetected(f"{what} has unknown value type {vtype}", self.path)

    def strings(self, count: int, what: str) -> list[str]:
        """A string array: the hot loop of opening a file (one entry per vocabulary token)."""
        buf, pos, end, unpack, out = self.buf, self.pos, self.end, _U64.unpack_from, []
        append = out.append
        try:
            for _ in range(count):
                if pos + 8 > end:
                    break
                (n,) = unpack(buf, pos)
                pos += 8
                if pos + n > end:
                    break
                append(buf[pos:pos + n].decode("utf-8"))
                pos += n
        except UnicodeDecodeError:
            raise CorruptionDetected(f"{what} entry {len(out)} is not valid UTF-8", self.path) from None
        self.pos = pos
        if len(out) != count:
            raise TruncatedInput(f"file ends inside {what} (entry {len(out)} of {count})", self.path)
        return out


class GGUFFile:
    """An open GGUF file: `version`, `metadata` (key -> value), `tensors` (name -> TensorInfo).

    Scalars come back as Python values, numeric arrays as numpy arrays, string arrays as lists.
    `raw(name)` is a read-only uint8 view of a tensor's bytes in the memory map.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                if size < 24:
                    raise TruncatedInput(f"file is {size} bytes, too short for a GGUF header", self.path)
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._fd = os.dup(f.fileno())
        except FileNotFoundError:
            raise ModelNotFound("no such file", self.path) from None
        except IsADirectoryError:
            raise ModelNotFound("is a directory, not a GGUF file", self.path) from None
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        cur = _Cursor(self._map, self.path)
        cur.need(4, "magic")
        if self._map[0:4] != GGUF_MAGIC:
            raise CorruptionDetected(f"not a GGUF file (magic {bytes(self._map[0:4])!r})", self.path)
        cur.pos = 4
        self.version = cur.u32("version")
        if self.version not in (2, 3):
            hint = " (big-endian?)" if self.version & 0xFFFF == 0 else ""
            raise UnsupportedParameter(f"GGUF version {self.version} is not supported (2 or 3){hint}", self.path)
        n_tensors, n_kv = cur.u64("tensor_count"), cur.u64("kv_count")
        if n_tensors > cur.end // 24 or n_kv > cur.end // 12:  # each entry takes at least that many bytes
            raise TruncatedInput(f"a file of {cur.end} bytes cannot hold {n_tensors} tensors and {n_kv} "
                                 f"metadata keys", self.path)
        self.metadata: dict = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            self.metadata[key] = cur.value(cur.u32(f"type of {key}"), key)
        infos = []
        for i in range(n_tensors):
            name = cur.string(f"tensor name #{i}")
            n_dims = cur.u32(f"n_dims of {name}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise CorruptionDetected(f"tensor {name} has {n_dims} dimensions (1..{MAX_DIMS})", self.path)
            dims = tuple(cur.u64(f"dims of {name}") for _ in range(n_dims))
            infos.append((name, dims, cur.u32(f"type of {name}"), cur.u64(f"offset of {name}")))
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CorruptionDetected(f"general.alignment {alignment!r} is not a power of two", self.path)
        self.data_start = -(-cur.pos // alignment) * alignment
        self.tensors: dict[str, TensorInfo] = {}
        for name, dims, ggml_type, offset in infos:
            self.tensors[name] = self._check_tensor(name, dims, ggml_type, offset, alignment)
        self._check_overlaps()

    def _check_overlaps(self) -> None:
        """No tensor's bytes overlap another's: a forged offset could make two weights one."""
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.tensors.values() if t.nbytes)
        for (a0, a1, a), (b0, b1, b) in zip(spans, spans[1:]):
            if b0 < a1:
                raise CorruptionDetected(f"tensors {a} and {b} overlap in the file", self.path)

    def _check_tensor(self, name, dims, ggml_type, offset, alignment) -> TensorInfo:
        if name in self.tensors:
            raise CorruptionDetected(f"tensor {name} appears twice", self.path)
        if offset % alignment:
            raise CorruptionDetected(f"tensor {name} offset {offset} is not aligned to {alignment}", self.path)
        if any(d <= 0 for d in dims):
            raise CorruptionDetected(f"tensor {name} has dims {dims}", self.path)
        info = TensorInfo(name, dims, ggml_type, self.data_start + offset, None)
        layout = LAYOUTS.get(ggml_type)
        if layout is None:
            return info
        if dims[0] % layout.block_size:
            raise CorruptionDetected(f"tensor {name} row of {dims[0]} is not a whole number of "
                                     f"{layout.name} blocks of {layout.block_size}", self.path)
        nbytes = info.n_elements // layout.block_size * layout.type_size
        if info.offset + nbytes > len(self._map):
            raise TruncatedInput(f"file ends inside tensor {name} (needs bytes up to {info.offset + nbytes}, "
                                 f"file has {len(self._map)})", self.path)
        return dataclasses.replace(info, nbytes=nbytes)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes, uint8 [nbytes], a view into the memory map (no copy)."""
        info = self.tensors[name]
        assert info.nbytes is not None, name
        return np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def pread(self, offset: int, nbytes: int) -> bytearray:
        """Bytes of the file read with pread: nothing stays mapped in this process."""
        buf = bytearray(nbytes)
        if nbytes and os.preadv(self._fd, [buf], offset) != nbytes:
            raise TruncatedInput(f"file ends before byte {offset + nbytes}", self.path)
        return buf

    def close(self) -> None:
        """Drop the map; views handed out by raw() keep it alive until they go too."""
        self._map = None
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None
