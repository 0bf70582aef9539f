"""tANS encoder (docs/FORMAT.md §7.3): order-0, the §7.2 frequency table, 8 lanes on one bit stream.

The encoder walks the input backwards (byte i with lane i mod 8) and records the bits each byte
emits; the decoder reads them forwards, byte 0's bits first, so the bit stream is packed in input
order and nothing is reversed.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import TANS_LANES, TANS_LOG, TANS_R, order0_model, put_bits, tans_spread


@njit(cache=True, nogil=True)
def tans_states_kernel(pos, freq, cum):
    # pos int32 [R] <- pos[cum[s] + j] = the j-th state (in increasing order) that the spread gives symbol s
    spread = np.empty(TANS_R, np.uint32)
    tans_spread(spread, freq)
    occ = cum.copy()
    for u in range(TANS_R):
        s = spread[u]
        pos[occ[s]] = u
        occ[s] += 1


@njit(cache=True, nogil=True)
def tans_encode_kernel(vals, nbs, src, freq, cum, pos):
    # vals uint16 [n], nbs uint8 [n] <- the bits byte i of src uint8 [n] emits; freq, cum int64 [256], pos int32 [R]
    # (tans_states_kernel); -> the final encoder states int64 [8], each in [R, 2R)
    xs = np.full(TANS_LANES, TANS_R, np.int64)
    nb_hi = np.zeros(256, np.int64)                # LOG - floor(log2 f): the bits emitted from the top of [R, 2R)
    for s in range(256):
        f = freq[s]
        while f > 1:
            nb_hi[s] += 1
            f >>= 1
        nb_hi[s] = TANS_LOG - nb_hi[s]
    for i in range(src.size - 1, -1, -1):
        k = i % TANS_LANES
        x, s = xs[k], src[i]
        f, nb = freq[s], nb_hi[s]
        if (x >> nb) < f:                          # x >> nb must land in [f, 2f)
            nb -= 1
        vals[i] = x & ((1 << nb) - 1)
        nbs[i] = nb
        xs[k] = TANS_R + pos[cum[s] + (x >> nb) - f]
    return xs


@njit(cache=True, nogil=True)
def pack_bits_kernel(dst, vals, nbs):
    # dst uint8 [cap] <- the bits vals[i] (nbs[i] of them) for i = 0, 1, ..., LSB-first; -> bytes written
    pos, acc, nacc = 0, np.uint64(0), 0
    for i in range(vals.size):
        pos, acc, nacc = put_bits(dst, pos, acc, nacc, vals[i], nbs[i])
    if nacc > 0:
        dst[pos] = acc & np.uint64(0xFF)
        pos += 1
    return pos


def tans_encode(data) -> bytes:
    """bytes-like -> tANS stream (FORMAT.md §7.3)."""
    src, freq, table, cum = order0_model(data)
    if src.size == 0:
        return table
    pos = np.empty(TANS_R, np.int32)
    tans_states_kernel(pos, freq, cum)
    vals = np.empty(src.size, np.uint16)
    nbs = np.empty(src.size, np.uint8)
    xs = tans_encode_kernel(vals, nbs, src, freq, cum, pos)
    dst = np.empty((int(nbs.sum(dtype=np.int64)) + 7) // 8 + 8, np.uint8)
    size = pack_bits_kernel(dst, vals, nbs)
    return table + (xs - TANS_R).astype("<u2").tobytes() + dst[:size].tobytes()
