"""rANS encoder (docs/FORMAT.md §7.2): order-0, one static frequency table per chunk.

Byte-wise renormalisation as in ryg_rans: 32-bit state in [L, 256 L), frequencies summing to
M = 2^14. Two states are interleaved (even / odd symbols) so the decoder runs two independent
dependency chains. The encoder walks the input backwards and writes its output backwards,
so the decoder reads forwards.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import RANS_L, RANS_M, RANS_SCALE_BITS, normalize_freqs, order0_model, write_freq_table

_XMAX_UNIT = (RANS_L >> RANS_SCALE_BITS) << 8


@njit(cache=True, nogil=True)
def rans_encode_kernel(dst, src, freq, cum, rcp):
    # dst uint8 [cap] filled from its end <- src uint8 [n]; freq, cum int64 [256]; rcp f64 [256] = 1/freq; -> first byte
    # two interleaved states: symbol i uses state i % 2 (FORMAT.md §7.2)
    x0 = np.int64(RANS_L)
    x1 = np.int64(RANS_L)
    pos = dst.size
    for i in range(src.size - 1, -1, -1):
        x = x1 if i & 1 else x0
        s = src[i]
        f = freq[s]
        x_max = _XMAX_UNIT * f
        while x >= x_max:
            pos -= 1
            dst[pos] = x & 0xFF
            x >>= 8
        q = np.int64(x * rcp[s])               # x div f without a division: x < 2^31, so the float
        r = x - q * f                          # quotient is off by at most one
        if r < 0:
            q, r = q - 1, r + f
        elif r >= f:
            q, r = q + 1, r - f
        x = q * RANS_M + r + cum[s]
        if i & 1:
            x1 = x
        else:
            x0 = x
    for x in (x1, x0):                         # final states, little-endian: x0 is read first, then x1
        for k in range(3, -1, -1):
            pos -= 1
            dst[pos] = (x >> (8 * k)) & 0xFF
    return pos


def rans_encode_reference(data: bytes) -> bytes:
    """Plain-Python encoder with integer division: the reference the tests compare the kernel against."""
    freq = normalize_freqs(np.bincount(np.frombuffer(data, np.uint8), minlength=256))
    table = write_freq_table(freq)
    if not data:
        return table
    cum = [0] * 256
    for s in range(1, 256):
        cum[s] = cum[s - 1] + int(freq[s - 1])
    xs, emitted = [RANS_L, RANS_L], bytearray()
    for i in range(len(data) - 1, -1, -1):
        s, f, x = data[i], int(freq[data[i]]), xs[i % 2]
        while x >= _XMAX_UNIT * f:
            emitted.append(x & 0xFF)
            x >>= 8
        xs[i % 2] = (x // f) * RANS_M + x % f + cum[s]
    states = xs[0].to_bytes(4, "little") + xs[1].to_bytes(4, "little")
    return table + states + bytes(reversed(emitted))


def rans_encode(data) -> bytes:
    """bytes-like -> rANS stream (FORMAT.md §7.2)."""
    src, freq, table, cum = order0_model(data)
    if src.size == 0:
        return table
    dst = np.empty(2 * src.size + 16, np.uint8)
    rcp = 1.0 / np.maximum(freq, 1)
    start = rans_encode_kernel(dst, src, freq, cum, rcp)
    return table + dst[start:].tobytes()
