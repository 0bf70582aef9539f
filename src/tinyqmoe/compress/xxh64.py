"""XXH64 (docs/FORMAT.md §1.1), the chunk checksum of format 2.0, in numba.

`xxh64_core(buf, seed)` is an `@njit(nogil=True)` function the fused reader calls on each chunk
inside its numba loop; `xxh64(data, seed)` is the Python wrapper. The algorithm is Yann Collet's
XXH64 (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md); the tests check it against
the `xxhash` package. All arithmetic is modulo 2^64; input words are little-endian.
"""
from __future__ import annotations

import numpy as np
from numba import njit

P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
P4 = np.uint64(0x85EBCA77C2B2AE63)
P5 = np.uint64(0x27D4EB2F165667C5)


@njit(cache=True, nogil=True, inline="always")
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(cache=True, nogil=True, inline="always")
def _read64(buf, i):
    # little-endian u64 at buf[i:i + 8] (LLVM merges the byte loads into one load)
    return (np.uint64(buf[i]) | (np.uint64(buf[i + 1]) << np.uint64(8))
            | (np.uint64(buf[i + 2]) << np.uint64(16)) | (np.uint64(buf[i + 3]) << np.uint64(24))
            | (np.uint64(buf[i + 4]) << np.uint64(32)) | (np.uint64(buf[i + 5]) << np.uint64(40))
            | (np.uint64(buf[i + 6]) << np.uint64(48)) | (np.uint64(buf[i + 7]) << np.uint64(56)))


@njit(cache=True, nogil=True, inline="always")
def _read32(buf, i):
    return (np.uint64(buf[i]) | (np.uint64(buf[i + 1]) << np.uint64(8))
            | (np.uint64(buf[i + 2]) << np.uint64(16)) | (np.uint64(buf[i + 3]) << np.uint64(24)))


@njit(cache=True, nogil=True, inline="always")
def _round(acc, lane):
    acc += lane * P2
    return _rotl(acc, 31) * P1


@njit(cache=True, nogil=True, inline="always")
def _merge(acc, v):
    acc ^= _round(np.uint64(0), v)
    return acc * P1 + P4


@njit(cache=True, nogil=True)
def xxh64_core(buf, seed):
    # buf uint8 [n] (contiguous), seed uint64 -> XXH64 digest uint64
    n = buf.size
    seed = np.uint64(seed)
    i = 0
    if n >= 32:                                   # stripes of 32 bytes, four accumulators
        v1 = seed + P1 + P2
        v2 = seed + P2
        v3 = seed
        v4 = seed - P1
        while i + 32 <= n:
            v1 = _round(v1, _read64(buf, i))
            v2 = _round(v2, _read64(buf, i + 8))
            v3 = _round(v3, _read64(buf, i + 16))
            v4 = _round(v4, _read64(buf, i + 24))
            i += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = seed + P5
    h += np.uint64(n)
    while i + 8 <= n:                             # the tail: 8-byte words, a 4-byte word, bytes
        h ^= _round(np.uint64(0), _read64(buf, i))
        h = _rotl(h, 27) * P1 + P4
        i += 8
    if i + 4 <= n:
        h ^= _read32(buf, i) * P1
        h = _rotl(h, 23) * P2 + P3
        i += 4
    while i < n:
        h ^= np.uint64(buf[i]) * P5
        h = _rotl(h, 11) * P1
        i += 1
    h ^= h >> np.uint64(33)                       # avalanche
    h *= P2
    h ^= h >> np.uint64(29)
    h *= P3
    h ^= h >> np.uint64(32)
    return h


def xxh64(data, seed: int = 0) -> int:
    """XXH64 of a bytes-like object or uint8 array: xxh64(b"") == 0xEF46DB3751D8E999."""
    buf = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    return int(xxh64_core(np.ascontiguousarray(buf), np.uint64(seed)))
