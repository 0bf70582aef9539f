"""Minimal safetensors reader (pread, bf16 aware) and atomic writer.

The format: an 8-byte little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then the data.
numpy has no bfloat16, so we read the bytes ourselves and widen bf16 to float32.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from tinyqmoe.errors import CorruptionDetected, TruncatedInput, UnsupportedModel, UsageError
from tinyqmoe.fileio import _umask, atomic_output, check_output, remove_stale_temps, temp_path

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
           "I8": np.int8, "U8": np.uint8, "I32": np.int32, "I64": np.int64}
_MAX_HEADER = 100 << 20


class SafetensorsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._f = open(self.path, "rb")
        except OSError as exc:
            raise UnsupportedModel(f"cannot open: {exc.strerror}", path) from None
        try:
            self._parse(path)
        except BaseException:
            self._f.close()
            raise

    def _parse(self, path) -> None:
        size = os.fstat(self._f.fileno()).st_size
        if size < 8:
            raise TruncatedInput("shorter than a safetensors header", path)
        (n,) = struct.unpack("<Q", self._f.read(8))
        if n > min(size - 8, _MAX_HEADER):
            raise TruncatedInput(f"header length {n} exceeds the file", path)
        try:
            header = json.loads(self._f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CorruptionDetected("safetensors header is not valid JSON", path) from None
        except RecursionError:
            raise CorruptionDetected("safetensors header is nested too deeply", path) from None
        if not isinstance(header, dict):
            raise CorruptionDetected("safetensors header is not a JSON object", path)
        self.metadata = header.pop("__metadata__", {}) or {}
        self._base = 8 + n
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, e in header.items():
            self.entries[name] = self._entry(name, e, size)
        self._check_layout(size)

    def _entry(self, name: str, e, size: int) -> tuple[str, tuple[int, ...], int, int]:
        """One header entry checked: known dtype, a shape of non-negative ints, offsets that hold exactly
        the shape's bytes inside the data area."""
        path = self.path
        try:
            dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        except (KeyError, TypeError):
            raise CorruptionDetected(f"bad header entry for {name!r}", path) from None
        if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list) \
                or len(offsets) != 2 or not all(_is_int(x) for x in shape + offsets) or len(shape) > 8:
            raise CorruptionDetected(f"bad header entry for {name!r}", path)
        if dtype not in _DTYPES:
            raise UnsupportedModel(f"tensor {name!r} has unsupported dtype {dtype}", path)
        if any(x < 0 for x in shape):
            raise CorruptionDetected(f"tensor {name!r} has shape {shape}", path)
        begin, end = offsets
        nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize   # Python ints: no overflow
        if not (0 <= begin <= end and end - begin == nbytes and self._base + end <= size):
            raise CorruptionDetected(f"tensor {name!r} offsets {begin}..{end} do not fit its shape "
                                     f"{shape} {dtype} or the file", path)
        return dtype, tuple(shape), self._base + begin, nbytes

    def _check_layout(self, size: int) -> None:
        """Tensors tile the data area exactly, as the safetensors reference requires: no two share bytes
        (a forged header could alias one weight onto another's data) and no byte is left over (a header
        length one short shifts every tensor by a byte)."""
        pos = 0
        for off, nbytes, name in sorted((off, nbytes, name) for name, (_, _, off, nbytes) in self.entries.items()):
            if off - self._base != pos:
                what = "overlaps the tensor before it" if off - self._base < pos else "leaves a gap before it"
                raise CorruptionDetected(f"tensor {name!r} {what} in the data area (offset {off - self._base}, "
                                         f"expected {pos})", self.path)
            pos += nbytes
        if self._base + pos != size:
            raise CorruptionDetected(f"tensor data ends at byte {self._base + pos}, the file has {size}", self.path)

    def dtype_name(self, name: str) -> str:
        return self.entries[name][0].lower()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The tensor (or its rows start..stop) widened to float32. Read with pread, not through a mapping,
        so that walking a model bigger than RAM tensor by tensor does not leave the file's pages in this
        process's RSS."""
        dtype, shape, offset, nbytes = self.entries[name]
        if stop is not None or start:
            rows = shape[0] if shape else 1
            stop = rows if stop is None else stop
            row_bytes = nbytes // rows if rows else 0
            shape = (stop - start,) + shape[1:]
            offset, nbytes = offset + start * row_bytes, (stop - start) * row_bytes
        buf = bytearray(nbytes)
        got = os.preadv(self._f.fileno(), [buf], offset) if nbytes else 0
        if got != nbytes:
            raise TruncatedInput(f"tensor {name!r} ends {nbytes - got} bytes early", self.path)
        raw = np.frombuffer(buf, dtype=_DTYPES[dtype])
        if dtype == "BF16":  # widen in place: peak memory is the bf16 bytes plus the float32 result
            wide = raw.astype(np.uint32)
            del raw, buf
            wide <<= 16
            return wide.view(np.float32).reshape(shape)
        return raw.astype(np.float32, copy=dtype != "F32").reshape(shape)

    def close(self) -> None:
        self._f.close()


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> 16) & 1))
    return (rounded >> 16).astype(np.uint16)


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], dtypes: dict[str, str] | None = None,
                      metadata: dict[str, str] | None = None) -> None:
    """Write tensors atomically; `dtypes[name] == "BF16"` stores a float32 array as bfloat16."""
    path = Path(path)
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        kind = (dtypes or {}).get(name) or {np.float32: "F32", np.float16: "F16"}[arr.dtype.type]
        data = f32_to_bf16_bits(arr) if kind == "BF16" else np.ascontiguousarray(arr, dtype=_DTYPES[kind])
        b = data.tobytes()
        header[name] = {"dtype": kind, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = metadata
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with atomic_output(path) as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


class SafetensorsWriter:
    """Streams one safetensors file without holding its tensors: the header first, then rows in order.

    `specs` declares every tensor upfront ({name: (dtype, shape)}, dtype "F32" | "F16" | "BF16"), in file
    order. `write(name, rows)` appends the next rows (first axis) of `name`; tensors are filled in the
    declared order. A float32 block is converted to the declared dtype; for "BF16" a uint16 block is
    taken as bfloat16 bits. The bytes equal `write_safetensors` of the same tensors. The file appears
    atomically at `close()` (temp file, fsync, rename); `abort()` (or an exception inside a `with`)
    leaves nothing.
    """

    def __init__(self, path: str | Path, specs: dict[str, tuple[str, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        self.path = Path(path)
        header, self._plan, offset = {}, [], 0
        for name, (kind, shape) in specs.items():
            shape = tuple(int(s) for s in shape)
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[kind]).itemsize
            header[name] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._plan.append((name, kind, shape, nbytes))
            offset += nbytes
        if metadata:
            header["__metadata__"] = metadata
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        self.path = check_output(self.path)
        remove_stale_temps(self.path)
        self._tmp = temp_path(self.path)
        self._f = open(self._tmp, "wb")
        self._f.write(struct.pack("<Q", len(hb)))
        self._f.write(hb)
        self._at, self._written = 0, 0   # tensor being filled, its bytes written so far

    def write(self, name: str, rows: np.ndarray) -> None:
        while self._at < len(self._plan) and self._plan[self._at][3] == 0 and self._plan[self._at][0] != name:
            self._at += 1   # zero-size tensors need no rows
        if self._at >= len(self._plan) or self._plan[self._at][0] != name:
            expected = self._plan[self._at][0] if self._at < len(self._plan) else "nothing"
            raise UsageError(f"rows of {name!r} written out of order (expected {expected})")
        _, kind, shape, nbytes = self._plan[self._at]
        if tuple(rows.shape[1:]) != shape[1:]:
            raise UsageError(f"rows of {name!r} have shape {rows.shape}, tensor is {shape}")
        if kind == "BF16" and rows.dtype != np.uint16:
            data = f32_to_bf16_bits(rows)
        else:
            data = np.ascontiguousarray(rows, dtype=_DTYPES[kind])
        if self._written + data.nbytes > nbytes:
            raise UsageError(f"more rows than {name!r} holds ({shape})")
        self._f.write(data.reshape(-1).view(np.uint8))
        self._written += data.nbytes
        if self._written == nbytes:
            self._at, self._written = self._at + 1, 0

    def close(self) -> None:
        """Check every tensor is complete, fsync, and rename into place."""
        try:
            missing = [n for n, _, _, nbytes in self._plan[self._at:] if nbytes]
            if missing:
                raise UsageError(f"tensor {missing[0]!r} is incomplete")
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.chmod(self._tmp, 0o666 & ~_umask())
            os.replace(self._tmp, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
