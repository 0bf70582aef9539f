"""The .tqm layout constants and fixed-size records, shared by the writer and the reader.

Names and order follow docs/FORMAT.md §3 (fixed header) and §4.2 (chunk index record).
"""
from __future__ import annotations

import struct

import numpy as np

MAGIC = b"TQMC\r\n\x1a\n"
VERSION_MAJOR, VERSION_MINOR = 1, 1   # 1.1: codec 4 (tans) may appear (docs/FORMAT.md change log)
ALIGN = 64
FIXED_HEADER_SIZE = 64
CHUNK_RECORD_SIZE = 32
MAX_JSON_SIZE = 1 << 30
MAX_CHUNK_RAW = 1 << 31
MAX_TENSOR_BYTES = 1 << 34

# §3: magic, version_major, version_minor, flags, index_offset, index_size, json_offset, json_size,
#     index_crc32, json_crc32, reserved; header_crc32 follows (over the first 60 bytes)
FIXED_HEADER = struct.Struct("<8sHHIQQQQIII")
assert FIXED_HEADER.size == 60

# §4.2: offset, stored_size, raw_size, row_start, row_count, crc32, codec, reserved[3]
CHUNK_DTYPE = np.dtype([("offset", "<u8"), ("stored_size", "<u4"), ("raw_size", "<u4"),
                        ("row_start", "<u4"), ("row_count", "<u4"), ("crc32", "<u4"),
                        ("codec", "u1"), ("reserved", "u1", (3,))])
assert CHUNK_DTYPE.itemsize == CHUNK_RECORD_SIZE

QTYPES = {"int8": 8, "int4": 4, "ternary": 2, "f32": 32}   # qtype -> bits per value (§5)
SCALE_BYTES = {"f32": 4, "f16": 2}


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a
