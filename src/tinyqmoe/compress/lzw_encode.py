"""LZW encoder (docs/FORMAT.md §7.1): variable-width codes 9..max_bits, CLEAR when full, LSB-first.

The dictionary is an open-addressing hash table keyed by (prefix code, next byte) with a
generation tag in the entry's high bits: a reset bumps the generation instead of clearing the
table, so a reset costs (almost) nothing. The table is sized to the codes the chunk can define
(at most min(2^max_bits, n + 257)), at load factor <= 1/2.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import LZW_CLEAR, LZW_FIRST_CODE, LZW_MAX_BITS, LZW_MIN_BITS, put_bits
from tinyqmoe.errors import UsageError

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def lzw_encode_kernel(dst, src, max_bits, table, tbits):
    # dst uint8 [cap] <- src uint8 [n]; table uint64 [2^tbits], all ones (empty); -> bytes written
    # entry = gen << 56 | (prefix << 8 | byte) << 24 | code: one load per probe; an entry of another
    # generation is free, so a reset only bumps gen (the table is refilled once every 255 resets)
    n = src.size
    dst[0] = max_bits
    if n == 0:
        return 1
    limit = 1 << max_bits
    mask = table.size - 1
    shift = np.uint64(64 - tbits)
    pos, acc, nacc = 1, np.uint64(0), 0
    gen, ncodes, width, p = np.uint64(0), LZW_FIRST_CODE, LZW_MIN_BITS, np.uint64(src[0])
    for i in range(1, n):
        c = np.uint64(src[i])
        low = (p << np.uint64(8)) | c
        want = (gen << np.uint64(32)) | low
        h = (low * _HASH_MUL) >> shift
        while True:
            e = table[h]
            if (e >> np.uint64(24)) == want:
                break
            if (e >> np.uint64(56)) != gen:
                break
            h = (h + np.uint64(1)) & np.uint64(mask)
        if (e >> np.uint64(24)) == want:
            p = e & np.uint64(0xFFFFFF)
            continue
        pos, acc, nacc = put_bits(dst, pos, acc, nacc, p, width)
        table[h] = (want << np.uint64(24)) | np.uint64(ncodes)
        ncodes += 1
        if ncodes > (1 << width):
            width += 1
        if ncodes == limit:
            pos, acc, nacc = put_bits(dst, pos, acc, nacc, LZW_CLEAR, width)
            gen, ncodes, width = gen + np.uint64(1), LZW_FIRST_CODE, LZW_MIN_BITS
            if gen == np.uint64(255):
                table[:] = np.uint64(0xFFFFFFFFFFFFFFFF)
                gen = np.uint64(0)
        p = c
    pos, acc, nacc = put_bits(dst, pos, acc, nacc, p, width)
    if nacc > 0:
        dst[pos] = acc & np.uint64(0xFF)
        pos += 1
    return pos


def lzw_encode_reference(data: bytes, max_bits: int) -> bytes:
    """Plain-Python LZW with a dict: the reference the tests compare the kernel against."""
    out, acc, nacc = bytearray([max_bits]), 0, 0

    def put(code, width):
        nonlocal acc, nacc
        acc |= code << nacc
        nacc += width
        while nacc >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nacc -= 8

    if not data:
        return bytes(out)
    limit = 1 << max_bits
    table: dict[bytes, int] = {}
    n, width, p = LZW_FIRST_CODE, LZW_MIN_BITS, data[:1]
    for c in data[1:]:
        pc = p + bytes([c])
        if len(pc) == 1 or pc in table:
            p = pc
            continue
        put(p[0] if len(p) == 1 else table[p], width)
        table[pc] = n
        n += 1
        if n > (1 << width):
            width += 1
        if n == limit:
            put(LZW_CLEAR, width)
            table, n, width = {}, LZW_FIRST_CODE, LZW_MIN_BITS
        p = bytes([c])
    put(p[0] if len(p) == 1 else table[p], width)
    if nacc:
        out.append(acc & 0xFF)
    return bytes(out)


def encode_bound(n: int, max_bits: int) -> int:
    """Bytes an encoding of n input bytes can take at most."""
    return 1 + (2 * n + 2) * max_bits // 8 + 8


def lzw_encode(data, max_bits: int = 16) -> bytes:
    """bytes-like -> LZW stream (FORMAT.md §7.1)."""
    if not LZW_MIN_BITS <= int(max_bits) <= LZW_MAX_BITS:
        raise UsageError(f"LZW max code width must be {LZW_MIN_BITS}..{LZW_MAX_BITS} bits, got {max_bits}")
    src = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    n = src.size
    codes = min(1 << max_bits, n + LZW_FIRST_CODE)
    tbits = max(8, (2 * codes - 1).bit_length())
    table = np.full(1 << tbits, EMPTY, np.uint64)
    dst = np.empty(encode_bound(n, max_bits), np.uint8)
    size = lzw_encode_kernel(dst, src, int(max_bits), table, tbits)
    return dst[:size].tobytes()
