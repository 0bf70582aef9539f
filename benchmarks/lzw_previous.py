"""The previous LZW decoder core (commit b7b3ba5, `lzw_decode_scratch` before the fast-path runs), frozen here
so that `benchmarks/codecs.py streams` can time it beside the current one in the same run (label "lzw-16 prev").
Benchmark-only: the package never imports it."""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import (E_BAD_CODE, E_OVERFLOW, E_TRAILING, E_TRUNCATED, LZW_CLEAR,
                                      LZW_FIRST_CODE, LZW_MAX_BITS, LZW_MIN_BITS, OK, load_u64, store_u64)


@njit(cache=True, nogil=True, inline="always")
def _code_at(src, bit, width):
    # the width-bit code at bit position `bit` of src (LSB-first); -1 if the stream ends first
    byte, shift = bit >> 3, np.uint64(bit & 7)
    if byte + 8 <= src.size:
        return np.int64((load_u64(src, byte) >> shift) & np.uint64((1 << width) - 1))
    if bit + width > 8 * src.size:
        return -1
    v = np.uint64(0)
    for q in range(min(4, src.size - byte)):         # width <= 24 and shift <= 7: 4 bytes hold the code
        v |= np.uint64(src[byte + q]) << np.uint64(8 * q)
    return np.int64((v >> shift) & np.uint64((1 << width) - 1))


@njit(cache=True, nogil=True)
def lzw_decode_previous(out, src, ent):
    # lzw_decode_core with the dictionary in a caller's buffer (the fused loop reuses one per thread):
    # ent int64 [>= LZW_FIRST_CODE] scratch (entries past min(2^max_bits, raw_size + 258) go unused); -> status
    cap, ns = out.size, src.size
    if ns < 1:
        return E_TRUNCATED
    if src[0] < LZW_MIN_BITS or src[0] > LZW_MAX_BITS or ent.size < LZW_FIRST_CODE:
        return E_BAD_CODE
    limit = 1 << np.int64(src[0])                      # ent: code -> offset << 32 | length
    ent[:256] = 0                                       # a literal: length 0 until its byte is first written,
                                                        # then the extent of that byte in out
    d_end = min(limit - 1, ent.size)                   # d may not reach it (a full dictionary needs CLEAR)
    bit, o = 8, 0
    d, width, have_prev, prev = LZW_FIRST_CODE, LZW_MIN_BITS, 0, 0
    while o < cap:
        if d + have_prev > (1 << width):                # w(d + 1) once a previous string exists
            width += 1
        k = _code_at(src, bit, width)
        if k < 0:
            return E_TRUNCATED
        bit += width
        if k == LZW_CLEAR:
            d, width, have_prev = LZW_FIRST_CODE, LZW_MIN_BITS, 0
            continue
        if have_prev:                                   # define d = previous string + first byte of this one
            if k > d or d >= d_end:
                return E_BAD_CODE
            ent[d] = prev + 1
            d += 1
        elif k > 255:
            return E_BAD_CODE
        off, ln = ent[k] >> 32, ent[k] & 0xFFFFFFFF
        if ln == 0:                                     # a byte's first appearance
            out[o] = k
            ent[k] = (o << 32) | 1
            ln = 1
        elif o + ((ln + 7) & ~7) <= cap and k != d - 1:  # 8-byte over-copies
            if o + ln > cap:
                return E_OVERFLOW
            store_u64(out, o, load_u64(out, off))
            for j in range(8, ln, 8):
                store_u64(out, o + j, load_u64(out, off + j))
        else:                                           # KwKwK overlaps itself, or too near the end of out
            if o + ln > cap:
                return E_OVERFLOW
            for j in range(ln):
                out[o + j] = out[off + j]
        prev, have_prev = (o << 32) | ln, 1
        o += ln
    if (bit + 7) >> 3 != ns:                            # no byte after the last code, padding bits zero
        return E_TRAILING
    if bit & 7 and src[ns - 1] >> (bit & 7) != 0:
        return E_TRAILING
    return OK
