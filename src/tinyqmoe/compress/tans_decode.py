"""tANS decoder (docs/FORMAT.md §7.3): 8 lanes read one LSB-first bit stream, a 4096-entry state table.

A state is an index into the table; its entry packs (nb, symbol, base) so that one symbol costs one
table load, one byte store and `x = base + next nb bits`: 7 instructions (load, shift of the bit word,
byte store of the symbol from the entry's second byte, bzhi and bit-position add straight from the entry,
base shift, add). The fast loop runs whole rounds of 8 symbols
whose reads it has proven in bounds beforehand (one check per batch of rounds); the last bytes go
through a checked slow path. Whatever the input, no read or write leaves `src` or `out`.

`tans_decode_core(out, src) -> status` is the numba entry point (the fused reader calls it);
`tans_decode_into` is the Python wrapper that raises typed errors.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import (E_BAD_STATE, E_TRAILING, E_TRUNCATED, OK, TANS_LANES, TANS_LOG, TANS_R,
                                      TANS_STEP, floor_log2, freq_table_kernel, load_u64, raise_status,
                                      read_freq_table, tans_spread)

_ROUND_BYTES = TANS_LANES * TANS_LOG // 8           # a round of 8 symbols reads at most 96 bits


@njit(cache=True, nogil=True)
def tans_table_kernel(table, freq):
    # table uint32 [R] <- freq int64 [256] summing to R: entry of state u = nb | symbol << 8 | base << 16, where
    # the j-th state of symbol s in increasing order has k = f + j, nb = LOG - floor(log2 k), base = k << nb - R
    tans_spread(table, freq)
    k_next = freq.copy()
    for u in range(TANS_R):
        s = table[u]
        k = k_next[s]
        k_next[s] = k + 1
        nb = TANS_LOG - floor_log2(k)
        table[u] = nb | (s << 8) | (((k << nb) - TANS_R) << 16)


@njit(cache=True, nogil=True, inline="always")
def _bits_checked(src, at, nb):
    # nb <= 12 bits of src at bit position `at` (at + nb <= 8 * src.size checked by the caller)
    byte = at >> 3
    v = np.uint64(0)
    for q in range(3):
        if byte + q < src.size:
            v |= np.uint64(src[byte + q]) << np.uint64(8 * q)
    return (v >> np.uint64(at & 7)) & np.uint64((1 << nb) - 1)


@njit(cache=True, nogil=True, inline="always")
def _low_bits(v, t):
    # the low (t & 255) bits of v (one bzhi: it reads only the low byte of t)
    return v & ((np.uint64(1) << (t & np.uint64(255))) - np.uint64(1))


@njit(cache=True, nogil=True)
def tans_lanes_kernel(out, src, ptr, table, xs):
    # out uint8 [n] <- the bit stream src[ptr:]; xs int64 [8] initial states (< R); table from tans_table_kernel
    # -> status (§7.3.2: the states end at 0, every bit is read and the padding bits are zero)
    n, ns = out.size, src.size
    x0, x1, x2, x3, x4, x5, x6, x7 = xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7]
    x0, x1, x2, x3 = np.uint64(x0), np.uint64(x1), np.uint64(x2), np.uint64(x3)
    x4, x5, x6, x7 = np.uint64(x4), np.uint64(x5), np.uint64(x6), np.uint64(x7)
    p, bp, i = np.uint64(ptr), np.uint64(0), np.uint64(0)
    m8, m255, one = np.uint64(8), np.uint64(255), np.uint64(1)
    # bp adds whole table entries (nb in the low byte): its low byte is the exact bit offset while at most
    # 7 + 4 * 12 bits are read between two refills, and shifts and bzhi only look at the low bits
    while True:                                      # fast path: batches of rounds whose loads are in bounds
        bp &= m255
        p += bp >> np.uint64(3)
        bp &= np.uint64(7)
        if np.uint64(ns) < p + np.uint64(_ROUND_BYTES // 2 + 8):
            break
        rounds = min((np.uint64(n) - i) // m8, (np.uint64(ns) - p - np.uint64(_ROUND_BYTES // 2 + 8))
                     // np.uint64(_ROUND_BYTES) + one)
        if rounds == 0:
            break
        for _ in range(rounds):
            bp &= m255
            p += bp >> np.uint64(3)
            bp &= np.uint64(7)
            bits = load_u64(src, p)
            t = np.uint64(table[x0])
            out[i] = np.uint8(t >> m8)
            x0 = (t >> np.uint64(16)) + _low_bits(bits >> (bp & np.uint64(63)), t)
            bp += t
            t = np.uint64(table[x1])
            out[i + np.uint64(1)] = np.uint8(t >> m8)
            x1 = (t >> np.uint64(16)) + _low_bits(bits >> (bp & np.uint64(63)), t)
            bp += t
            t = np.uint64(table[x2])
            out[i + np.uint64(2)] = np.uint8(t >> m8)
            x2 = (t >> np.uint64(16)) + _low_bits(bits >> (bp & np.uint64(63)), t)
            bp += t
            t = np.uint64(table[x3])
            out[i + np.uint64(3)] = np.uint8(t >> m8)
            x3 = (t >> np.uint64(16)) + _low_bits(bits >> (bp & np.uint64(63)), t)
            bp += t
            bp &= m255
            p += bp >> np.uint64(3)
            bp &= np.uint64(7)
            bits = load_u64(src, p)
            t = np.uint64(table[x4])
            out[i + np.uint64(4)] = np.uint8(t >> m8)
            x4 = (t >> np.uint64(16)) + _low_bits(bits >> (bp & np.uint64(63)), t)
            bp += t
            t = np.uint64(table[x5])
            out[i + np.uint64(5)] = np.uint8(t >> m8)
            x5 = (t >> np.uint64(16)) + _low_bits(bits >> (bp & np.uint64(63)), t)
            bp += t
            t = np.uint64(table[x6])
            out[i + np.uint64(6)] = np.uint8(t >> m8)
            x6 = (t >> np.uint64(16)) + _low_bits(bits >> (bp & np.uint64(63)), t)
            bp += t
            t = np.uint64(table[x7])
            out[i + np.uint64(7)] = np.uint8(t >> m8)
            x7 = (t >> np.uint64(16)) + _low_bits(bits >> (bp & np.uint64(63)), t)
            bp += t
            i += m8
    bp &= m255
    p += bp >> np.uint64(3)
    bp &= np.uint64(7)
    xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7] = x0, x1, x2, x3, x4, x5, x6, x7
    at = np.int64(p) * 8 + np.int64(bp)              # slow path: every read checked
    for j in range(np.int64(i), n):
        t = np.int64(table[xs[j % TANS_LANES]])
        nb = t & 255
        if at + nb > 8 * ns:
            return E_TRUNCATED
        out[j] = (t >> 8) & 255
        xs[j % TANS_LANES] = (t >> 16) + np.int64(_bits_checked(src, at, nb))
        at += nb
    for k in range(TANS_LANES):
        if xs[k] != 0:
            return E_BAD_STATE
    if (at + 7) // 8 != ns:
        return E_TRAILING
    if (at & 7) != 0 and (src[ns - 1] >> (at & 7)) != 0:
        return E_TRAILING
    return OK


@njit(cache=True, nogil=True)
def tans_decode_core(out, src):
    # out uint8 [raw_size] <- src uint8 [stored], a whole §7.3 stream; -> 0, or a negative status (common.py)
    freq = np.empty(256, np.int64)
    pos = freq_table_kernel(freq, src, out.size)
    if pos < 0:
        return pos
    if out.size == 0:
        return OK if pos == src.size else E_TRAILING
    if pos + 2 * TANS_LANES > src.size:
        return E_TRUNCATED
    xs = np.empty(TANS_LANES, np.int64)
    for k in range(TANS_LANES):
        xs[k] = np.int64(src[pos + 2 * k]) | (np.int64(src[pos + 2 * k + 1]) << 8)
        if xs[k] >= TANS_R:
            return E_BAD_STATE
    table = np.empty(TANS_R, np.uint32)
    tans_table_kernel(table, freq)
    return tans_lanes_kernel(out, src, pos + 2 * TANS_LANES, table, xs)


def tans_decode_into(out: np.ndarray, src) -> None:
    """Decode a tANS stream (bytes-like) into out (uint8 [raw_size]); typed errors on bad input."""
    raise_status(tans_decode_core(out, np.frombuffer(src, np.uint8)), "tans")


def tans_decode(src, raw_size: int) -> np.ndarray:
    out = np.empty(raw_size, np.uint8)
    tans_decode_into(out, src)
    return out


def tans_decode_reference(src: bytes, raw_size: int) -> bytes:
    """Plain-Python decoder written from FORMAT.md §7.3 (a sort for the spread, bit-by-bit reads): the
    reference the tests compare the kernel against."""
    freq, pos = read_freq_table(src, raw_size)
    if raw_size == 0:
        return b""
    R, spread, p = TANS_R, [0] * TANS_R, 0
    for s, f in enumerate(freq):
        for _ in range(int(f)):
            spread[p] = s
            p = (p + TANS_STEP) % R
    k_next, entry = [int(f) for f in freq], []       # state -> (symbol, nb, base)
    for s in spread:
        k = k_next[s]
        k_next[s] += 1
        nb = TANS_LOG - (k.bit_length() - 1)
        entry.append((s, nb, (k << nb) - R))
    xs = [int.from_bytes(src[pos + 2 * k:pos + 2 * k + 2], "little") for k in range(TANS_LANES)]
    bits = int.from_bytes(src[pos + 2 * TANS_LANES:], "little")
    at, out = 0, bytearray()
    for i in range(raw_size):
        s, nb, base = entry[xs[i % TANS_LANES]]
        out.append(s)
        xs[i % TANS_LANES] = base + ((bits >> at) & ((1 << nb) - 1))
        at += nb
    return bytes(out)
