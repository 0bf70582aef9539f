"""rANS decoder (docs/FORMAT.md §7.2): a slot -> symbol table, then one state update per byte."""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import (E_BAD_STATE, E_TRAILING, E_TRUNCATED, OK, RANS_L, RANS_M,
                                      RANS_SCALE_BITS, raise_status, read_freq_table)


@njit(cache=True, nogil=True)
def rans_decode_kernel(dst, src, pos, slots):
    # dst uint8 [n] <- src uint8 [stored] from pos (the state); slots uint32 [M] = sym | (freq - 1) << 8 | (slot - cum) << 20; -> status
    n_src = src.size
    if pos + 4 > n_src:
        return E_TRUNCATED
    x = np.int64(src[pos]) | (np.int64(src[pos + 1]) << 8) | (np.int64(src[pos + 2]) << 16) | (np.int64(src[pos + 3]) << 24)
    pos += 4
    if x < RANS_L or x >= (RANS_L << 8):
        return E_BAD_STATE
    for i in range(dst.size):
        t = np.int64(slots[x & (RANS_M - 1)])          # one load per symbol, from a table in L1
        dst[i] = t & 0xFF
        x = (((t >> 8) & 0xFFF) + 1) * (x >> RANS_SCALE_BITS) + (t >> 20)
        while x < RANS_L:
            if pos >= n_src:
                return E_TRUNCATED
            x = (x << 8) | np.int64(src[pos])
            pos += 1
    if x != RANS_L:
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
    x = int.from_bytes(src[pos:pos + 4], "little")
    pos += 4
    for _ in range(raw_size):
        slot = x % RANS_M
        s = next(s for s in range(256) if freq[s] and cum[s] <= slot < cum[s] + freq[s])
        out.append(s)
        x = int(freq[s]) * (x // RANS_M) + slot - int(cum[s])
        while x < RANS_L:
            x = (x << 8) | src[pos]
            pos += 1
    return bytes(out)


def rans_decode_into(out: np.ndarray, src) -> None:
    """Decode a rANS stream (bytes-like) into out (uint8 [raw_size]); typed errors on bad input."""
    s = np.frombuffer(src, np.uint8)
    freq, pos = read_freq_table(s, out.size)
    if out.size == 0:
        if pos != s.size:
            raise_status(E_TRAILING, "rans")
        return
    freq = freq.astype(np.int64)
    cum = np.zeros(256, np.int64)
    cum[1:] = np.cumsum(freq)[:-1]
    sym = np.repeat(np.arange(256, dtype=np.int64), freq)
    slots = (sym | ((freq[sym] - 1) << 8) | ((np.arange(RANS_M, dtype=np.int64) - cum[sym]) << 20)).astype(np.uint32)
    raise_status(rans_decode_kernel(out, s, pos, slots), "rans")


def rans_decode(src, raw_size: int) -> np.ndarray:
    out = np.empty(raw_size, np.uint8)
    rans_decode_into(out, src)
    return out
