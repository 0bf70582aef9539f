"""The .tqm layout constants and fixed-size records, shared by the writer and the reader.

Names and order follow docs/FORMAT.md §3 (fixed header) and §4.2 (chunk index record).
"""
from __future__ import annotations

import struct

import numpy as np

MAGIC = b"TQMC\r\n\x1a\n"
VERSION_MAJOR, VERSION_MINOR = 2, 2   # written; 2.0: XXH64 chunk checksums in 40-byte records, 2.1: qtype uint4,
                                      # 2.2: uint4 scales of either sign (docs/FORMAT.md)
READ_MAJORS = (1, 2)                  # read: 1.x (CRC-32 in 32-byte records) and 2.x
ALIGN = 64
FIXED_HEADER_SIZE = 64
CHUNK_RECORD_SIZES = {1: 32, 2: 40}   # version_major -> bytes per chunk record (§4.2)
CHUNK_CHECKSUMS = {1: "crc32", 2: "xxh64"}
MAX_JSON_SIZE = 1 << 30
MAX_CHUNK_RAW = 1 << 31
MAX_TENSOR_BYTES = 1 << 34

# §3: magic, version_major, version_minor, flags, index_offset, index_size, json_offset, json_size,
#     index_crc32, json_crc32, reserved; header_crc32 follows (over the first 60 bytes)
FIXED_HEADER = struct.Struct("<8sHHIQQQQIII")
assert FIXED_HEADER.size == 60

# §4.2, version 2: offset, stored_size, raw_size, row_start, row_count, check (xxh64), codec, reserved[7].
# The reader holds every version's records in this dtype (a version-1 crc32 widened into `check`).
CHUNK_DTYPE = np.dtype([("offset", "<u8"), ("stored_size", "<u4"), ("raw_size", "<u4"),
                        ("row_start", "<u4"), ("row_count", "<u4"), ("check", "<u8"),
                        ("codec", "u1"), ("reserved", "u1", (7,))])
# §4.2, version 1: offset, stored_size, raw_size, row_start, row_count, crc32, codec, reserved[3]
CHUNK_DTYPE_V1 = np.dtype([("offset", "<u8"), ("stored_size", "<u4"), ("raw_size", "<u4"),
                           ("row_start", "<u4"), ("row_count", "<u4"), ("crc32", "<u4"),
                           ("codec", "u1"), ("reserved", "u1", (3,))])
assert CHUNK_DTYPE.itemsize == CHUNK_RECORD_SIZES[2] and CHUNK_DTYPE_V1.itemsize == CHUNK_RECORD_SIZES[1]
_SHARED_FIELDS = ("offset", "stored_size", "raw_size", "row_start", "row_count", "codec")   # both versions


def chunk_records(raw: bytes, major: int) -> np.ndarray:
    """A chunk index's bytes -> CHUNK_DTYPE records (version 1's widened)."""
    if major == 2:
        return np.frombuffer(raw, CHUNK_DTYPE)
    v1 = np.frombuffer(raw, CHUNK_DTYPE_V1)
    out = np.zeros(v1.size, CHUNK_DTYPE)
    for k in _SHARED_FIELDS:
        out[k] = v1[k]
    out["check"] = v1["crc32"]
    out["reserved"][:, :3] = v1["reserved"]
    return out


def index_bytes(records: np.ndarray, major: int) -> bytes:
    """CHUNK_DTYPE records -> a chunk index's bytes in version `major` (the writer's inverse of chunk_records)."""
    if major == 2:
        return records.astype(CHUNK_DTYPE).tobytes()
    v1 = np.zeros(records.size, CHUNK_DTYPE_V1)
    for k in _SHARED_FIELDS:
        v1[k] = records[k]
    v1["crc32"] = records["check"]
    v1["reserved"] = records["reserved"][:, :3]
    return v1.tobytes()


def chunk_seed(codec: int, raw_size: int) -> int:
    """The XXH64 seed of a 2.x chunk (§4.2): its codec id and decoded size, so that a record whose codec or
    size was changed no longer matches its bytes."""
    return codec + 256 * raw_size


def chunk_checksum(major: int, data, codec: int, raw_size: int) -> int:
    """A chunk's checksum in version `major`: CRC-32 of its bytes (1.x) or XXH64 of its bytes seeded with
    chunk_seed(codec, raw_size) (2.x)."""
    if major == 1:
        from tinyqmoe.compress.common import crc32

        return crc32(data)
    from tinyqmoe.compress.xxh64 import xxh64

    return xxh64(data, chunk_seed(codec, raw_size))

QTYPES = {"int8": 8, "int4": 4, "uint4": 4, "ternary": 2, "f32": 32}   # qtype -> bits per value (§5)
OFFSET_QTYPES = ("uint4",)   # qtypes with an offset per group after each row's scales (§6.1)
SCALE_BYTES = {"f32": 4, "f16": 2}


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a
