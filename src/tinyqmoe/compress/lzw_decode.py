"""LZW decoder (docs/FORMAT.md §7.1) by back-references.

Every dictionary entry is a substring of the output already written, so an entry is an
(offset, length) extent of the output and decoding a code is a forward copy: no prefix-chain
walks. The entry table is sized to what the chunk can define, min(2^max_bits, raw_size + 258).

`lzw_decode_core(out, src) -> status` is the numba entry point (the fused reader calls it, through
`lzw_decode_scratch` with a reused dictionary). Its fast path runs codes of one width in a loop whose
every load and store is in bounds by the run's length, checked once per run: per code one unaligned
64-bit load of the stream, one entry load, one check that the code is below d and one that its string
is 1..8 bytes, then one 8-byte over-copy of the string (the bytes written past its end are rewritten by
the strings after it) and the next entry. A byte's first appearance, CLEAR (their entries hold a length
of 2^32 - 1), a long or self-overlapping (KwKwK) string, a code width change, the last bytes of `out` or
of the stream and corrupt codes go through a slow path that checks everything, one code at a time.
`lzw_decode_kernel` is the first, byte-at-a-time decoder, kept as the second implementation the
tests compare against and as the benchmark's "old" row.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import (E_BAD_CODE, E_OVERFLOW, E_TRAILING, E_TRUNCATED, LZW_CLEAR,
                                      LZW_FIRST_CODE, LZW_MAX_BITS, LZW_MIN_BITS, OK, load_u64, raise_status,
                                      refill_bits, store_u64)
from tinyqmoe.errors import CorruptionDetected, TruncatedInput

_NEW = 0xFFFFFFFF   # the entry of a byte not yet written, and of CLEAR: a length no chunk has (> 8: the slow path)


@njit(cache=True, nogil=True)
def lzw_decode_kernel(dst, src, ent):
    # dst uint8 [raw_size] <- src uint8 [stored] (max_bits byte checked); ent int64 [E] scratch (offset << 32 | length); -> status
    limit = 1 << np.int64(src[0])
    cap = dst.size
    pos, acc, nacc, out = 1, np.uint64(0), 0, 0
    d, width, have_prev, prev = LZW_FIRST_CODE, LZW_MIN_BITS, 0, 0
    while out < cap:
        while (1 << width) < d + have_prev:             # w(d + 1) once a previous string exists
            width += 1
        pos, acc, nacc, ok = refill_bits(src, pos, acc, nacc, width)
        if not ok:
            return E_TRUNCATED
        k = np.int64(acc & np.uint64((1 << width) - 1))
        acc >>= np.uint64(width)
        nacc -= width
        if k == LZW_CLEAR:
            d, width, have_prev = LZW_FIRST_CODE, LZW_MIN_BITS, 0
            continue
        if have_prev:                                   # define d = previous string + first byte of this one
            if k > d or d >= limit - 1 or d >= ent.size:
                return E_BAD_CODE
            ent[d] = prev + 1
            d += 1
        elif k > 255:
            return E_BAD_CODE
        if k < 256:
            dst[out] = k
            prev, have_prev = (out << 32) | 1, 1
            out += 1
            continue
        off, ln = ent[k] >> 32, ent[k] & 0xFFFFFFFF
        if out + ln > cap:
            return E_OVERFLOW
        for j in range(ln):                             # forward copy: KwKwK overlaps itself
            dst[out + j] = dst[off + j]
        prev = (out << 32) | ln
        out += ln
    if pos != src.size or nacc >= 8 or acc != 0:        # padding bits zero, no byte after the last code
        return E_TRAILING
    return OK


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
def lzw_decode_core(out, src):
    # out uint8 [raw_size] <- src uint8 [stored], a whole §7.1 stream; -> 0, or a negative status (common.py)
    if src.size < 1:
        return E_TRUNCATED
    if src[0] < LZW_MIN_BITS or src[0] > LZW_MAX_BITS:
        return E_BAD_CODE
    return lzw_decode_scratch(out, src, np.empty(min(1 << np.int64(src[0]), out.size + LZW_FIRST_CODE + 1),
                                                 np.int64))


@njit(cache=True, nogil=True)
def lzw_decode_scratch(out, src, ent):
    # lzw_decode_core with the dictionary in a caller's buffer (the fused loop reuses one per thread):
    # ent int64 [>= LZW_FIRST_CODE] scratch (entries past min(2^max_bits, raw_size + 258) go unused); -> status
    cap, ns = out.size, src.size
    if ns < 1:
        return E_TRUNCATED
    if src[0] < LZW_MIN_BITS or src[0] > LZW_MAX_BITS or ent.size < LZW_FIRST_CODE:
        return E_BAD_CODE
    if cap > (1 << 31):                                 # offsets must fit the entry's 32 high bits
        return E_OVERFLOW
    limit = 1 << np.int64(src[0])                      # ent: code -> offset << 32 | length
    ent[:LZW_FIRST_CODE] = _NEW                         # bytes not yet written, and CLEAR: the slow path's business
    d_end = min(limit - 1, ent.size)                   # d may not reach it (a full dictionary needs CLEAR)
    safe_bits = (ns - 7) * 8                            # a code starting below this bit is one 8-byte load
    bit, o = 8, 0
    d, width, have_prev, prev = LZW_FIRST_CODE, LZW_MIN_BITS, 0, 0
    while o < cap:
        if d + have_prev > (1 << width):                # w(d + 1) once a previous string exists
            width += 1
        if have_prev and bit < safe_bits:
            # fast path: a run of codes with one width, every load of src, ent and out in bounds by the run's
            # length (codes start below safe_bits; d stays below d_end and 2^width; each code writes 8 bytes
            # at o <= cap - 8). A code leaves the run, unconsumed, if it is not below d (KwKwK, or corrupt)
            # or its string is not 1..8 bytes (a byte's first appearance, CLEAR, a long string).
            n = min((1 << width) - d, d_end - d, (cap - o) >> 3, (safe_bits - 1 - bit) // width + 1)
            if n > 0:
                mask, uw = np.uint64((1 << width) - 1), np.uint64(width)
                ud, ub, uo, up = np.uint64(d), np.uint64(bit), np.uint64(o), np.uint64(prev)
                d_stop = ud + np.uint64(n)
                while ud < d_stop:
                    k = (load_u64(src, ub >> np.uint64(3)) >> (ub & np.uint64(7))) & mask
                    if k >= ud:
                        break
                    e = np.uint64(ent[k])
                    ln = e & np.uint64(0xFFFFFFFF)
                    if ln > np.uint64(8):
                        break
                    ub += uw
                    ent[ud] = up + np.uint64(1)         # define d = previous string + first byte of this one
                    ud += np.uint64(1)
                    store_u64(out, uo, load_u64(out, e >> np.uint64(32)))   # the string, over-copied to 8 bytes
                    up = (uo << np.uint64(32)) | ln
                    uo += ln
                d, bit, o, prev = np.int64(ud), np.int64(ub), np.int64(uo), np.int64(up)
                if o >= cap:
                    break
                if d + 1 > (1 << width):
                    width += 1
        # slow path: one code, every check
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
        if ln == _NEW:                                  # a byte's first appearance: its extent from now on
            out[o] = k
            ent[k] = (o << 32) | 1
            ln = 1
        elif o + ln > cap:
            return E_OVERFLOW
        elif o + ((ln + 7) & ~7) <= cap and k != d - 1:  # 8-byte over-copies
            for j in range(0, ln, 8):
                store_u64(out, o + j, load_u64(out, off + j))
        else:                                           # KwKwK overlaps itself, or too near the end of out
            for j in range(ln):
                out[o + j] = out[off + j]
        prev, have_prev = (o << 32) | ln, 1
        o += ln
    if (bit + 7) >> 3 != ns:                            # no byte after the last code, padding bits zero
        return E_TRAILING
    if bit & 7 and src[ns - 1] >> (bit & 7) != 0:
        return E_TRAILING
    return OK


def lzw_decode_reference(src: bytes, raw_size: int) -> bytes:
    """Plain-Python decoder with string tables: the reference the tests compare the kernel against."""
    limit, pos, acc, nacc = 1 << src[0], 1, 0, 0
    out = bytearray()
    table: dict[int, bytes] = {}
    d, width, prev = LZW_FIRST_CODE, LZW_MIN_BITS, None
    while len(out) < raw_size:
        while (1 << width) < d + (prev is not None):
            width += 1
        while nacc < width:
            acc |= src[pos] << nacc
            pos, nacc = pos + 1, nacc + 8
        k, acc, nacc = acc & ((1 << width) - 1), acc >> width, nacc - width
        if k == LZW_CLEAR:
            table, d, width, prev = {}, LZW_FIRST_CODE, LZW_MIN_BITS, None
            continue
        if prev is None:
            out.append(k)
            prev = bytes([k])
            continue
        cur = bytes([k]) if k < 256 else table.get(k, prev + prev[:1])
        table[d] = prev + cur[:1]
        d += 1
        out += cur
        prev = cur
    assert d < limit
    return bytes(out)


def lzw_decode_into(out: np.ndarray, src) -> None:
    """Decode an LZW stream (bytes-like) into out (uint8 [raw_size]); typed errors on bad input."""
    s = np.frombuffer(src, np.uint8)
    if s.size < 1:
        raise TruncatedInput("lzw stream: missing the max_bits byte", field="lzw")
    max_bits = int(s[0])
    if not LZW_MIN_BITS <= max_bits <= LZW_MAX_BITS:
        raise CorruptionDetected(f"lzw stream: max_bits {max_bits} is not in {LZW_MIN_BITS}..{LZW_MAX_BITS}",
                                 field="lzw.max_bits")
    raise_status(lzw_decode_core(out, s), "lzw")


def lzw_decode_into_old(out: np.ndarray, src) -> None:
    """The first decoder (lzw_decode_kernel), for the tests and the benchmark's comparison row."""
    s = np.frombuffer(src, np.uint8)
    if s.size < 1 or not LZW_MIN_BITS <= int(s[0]) <= LZW_MAX_BITS:
        raise CorruptionDetected("lzw stream: bad max_bits byte", field="lzw.max_bits")
    ent = np.empty(min(1 << int(s[0]), out.size + LZW_FIRST_CODE + 1), np.int64)
    raise_status(lzw_decode_kernel(out, s, ent), "lzw")


def lzw_decode(src, raw_size: int) -> np.ndarray:
    out = np.empty(raw_size, np.uint8)
    lzw_decode_into(out, src)
    return out
