"""Helpers to corrupt a .tqm file: read everything, and rewrite a file with fixed-up checksums."""
from __future__ import annotations

import json

import numpy as np

from tinyqmoe.compress.common import crc32
from tinyqmoe.compress.reader import open_container
from tinyqmoe.compress.container_format import FIXED_HEADER, chunk_checksum, chunk_records, index_bytes


def read_all(path) -> dict:
    """Every tensor decoded: name -> bytes of (payload, scales), via the public reader."""
    out = {}
    with open_container(path) as c:
        for name in c.names:
            if c.tensor(name).qtype == "f32":
                out[name] = c.read_float(name).tobytes()
            else:
                qt = c.read_quantized(name)
                out[name] = qt.q.tobytes() + qt.scale.tobytes()
    return out


def split(blob: bytes):
    """(bytes before the index, the chunk records (a version-1 file's widened), the JSON header)."""
    f = FIXED_HEADER.unpack_from(blob)
    io, isz, jo, jsz = f[4], f[5], f[6], f[7]
    return blob[:io], chunk_records(blob[io:io + isz], f[1]).copy(), json.loads(blob[jo:jo + jsz])


def chunk_check(data_part: bytes, stored: bytes, record) -> int:
    """The checksum chunk record `record` of this file's version holds for `stored` (CRC-32 in 1.x,
    XXH64 seeded with the record's codec and decoded size in 2.x)."""
    return chunk_checksum(FIXED_HEADER.unpack_from(data_part)[1], stored, int(record["codec"]),
                          int(record["raw_size"]))


def rebuild(data_part: bytes, index: np.ndarray, header: dict, json_bytes: bytes | None = None) -> bytes:
    """Reassemble a file from its parts with every checksum recomputed (a 'valid-looking' forgery)."""
    ib = index_bytes(index, FIXED_HEADER.unpack_from(data_part)[1])
    js = json_bytes if json_bytes is not None else json.dumps(header).encode()
    f = list(FIXED_HEADER.unpack_from(data_part))
    io = len(data_part)
    f[4], f[5], f[6], f[7], f[8], f[9] = io, len(ib), io + len(ib), len(js), crc32(ib), crc32(js)
    fixed = FIXED_HEADER.pack(*f)
    return fixed + crc32(fixed).to_bytes(4, "little") + data_part[64:] + ib + js
