"""rANS decoder (docs/FORMAT.md §7.2): a slot -> (symbol, freq, bias) table, one state update per byte,
two interleaved states (even and odd bytes) so two dependency chains run side by side."""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import (E_BAD_STATE, E_TRAILING, E_TRUNCATED, OK, RANS_L, RANS_M, RANS_SCALE_BITS,
                                      freq_table_kernel, raise_status, read_freq_table)


@njit(cache=True, nogil=True, inline="always")
def _rans_step(dst, i, x, slots):
    t = np.int64(slots[x & (RANS_M - 1)])              # one load per symbol, from a table in L1
    dst[i] = t & 0xFF
    return (((t >> 8) & 0xFFF) + 1) * (x >> RANS_SCALE_BITS) + (t >> 20)


@njit(cache=True, nogil=True)
def rans_decode_kernel(dst, src, pos, slots):
    # dst uint8 [n] <- src uint8 [stored] from pos (the two states); slots uint32 [M] = sym | (freq - 1) << 8 | (slot - cum) << 20; -> status
    n_src, n = src.size, dst.size
    if pos + 8 > n_src:
        return E_TRUNCATED
    x0, x1 = np.int64(0), np.int64(0)
    for k in range(4):
        x0 |= np.int64(src[pos + k]) << (8 * k)
        x1 |= np.int64(src[pos + 4 + k]) << (8 * k)
    pos += 8
    if x0 < RANS_L or x0 >= (RANS_L << 8) or x1 < RANS_L or x1 >= (RANS_L << 8):
        return E_BAD_STATE
    for i in range(0, n, 2):                           # symbol i: state 0, symbol i + 1: state 1
        x0 = _rans_step(dst, i, x0, slots)
        while x0 < RANS_L:
            if pos >= n_src:
                return E_TRUNCATED
            x0 = (x0 << 8) | np.int64(src[pos])
            pos += 1
        if i + 1 < n:
            x1 = _rans_step(dst, i + 1, x1, slots)
            while x1 < RANS_L:
                if pos >= n_src:
                    return E_TRUNCATED
                x1 = (x1 << 8) | np.int64(src[pos])
                pos += 1
    if x0 != RANS_L or x1 != RANS_L:
        return E_BAD_STATE
    if pos != n_src:
        return E_TRAILING
    return OK


def rans_decode_reference(src: bytes, raw_size: int) -> bytes:
    """Plain-Python decoder (linear symbol search): the reference the tests compare the kernel against."""
    freq, pos = read_freq_table(src, raw_size)
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    out = bytearray()
    if raw_size == 0:
        return bytes(out)
    xs = [int.from_bytes(src[pos:pos + 4], "little"), int.from_bytes(src[pos + 4:pos + 8], "little")]
    pos += 8
    for i in range(raw_size):
        x = xs[i % 2]
        slot = x % RANS_M
        s = next(s for s in range(256) if freq[s] and cum[s] <= slot < cum[s] + freq[s])
        out.append(s)
        x = int(freq[s]) * (x // RANS_M) + slot - int(cum[s])
        while x < RANS_L:
            x = (x << 8) | src[pos]
            pos += 1
        xs[i % 2] = x
    return bytes(out)


@njit(cache=True, nogil=True)
def rans_table_kernel(slots, src, raw_size):
    # slots uint32 [M] <- the frequency table at the start of src uint8 (§7.2); -> bytes used, or a status < 0
    freq = np.empty(256, np.int64)
    pos = freq_table_kernel(freq, src, raw_size)
    if pos < 0:
        return pos
    total = 0
    for sym in range(256):
        f = freq[sym]
        for k in range(f):                      # slot -> sym | (freq - 1) << 8 | (slot - cum) << 20
            slots[total + k] = sym | ((f - 1) << 8) | (k << 20)
        total += f
    return pos


@njit(cache=True, nogil=True)
def rans_decode_core(out, src):
    # out uint8 [raw_size] <- src uint8 [stored], a whole §7.2 stream; -> 0, or a negative status (common.py)
    slots = np.empty(RANS_M, np.uint32)
    pos = rans_table_kernel(slots, src, out.size)
    if pos < 0:
        return pos
    if out.size == 0:
        return OK if pos == src.size else E_TRAILING
    return rans_decode_kernel(out, src, pos, slots)


def rans_decode_into(out: np.ndarray, src) -> None:
    """Decode a rANS stream (bytes-like) into out (uint8 [raw_size]); typed errors on bad input."""
    raise_status(rans_decode_core(out, np.frombuffer(src, np.uint8)), "rans")


def rans_decode(src, raw_size: int) -> np.ndarray:
    out = np.empty(raw_size, np.uint8)
    rans_decode_into(out, src)
    return out
