"""The previous LZW and tANS decoder cores, frozen here so that `benchmarks/codecs.py streams` can time them
beside the current ones in the same run (labels "lzw-16 prev", "tans prev"): `lzw_decode_previous` is
`lzw_decode_scratch` of commit 4369fed (8-byte over-copies, every check per code), `tans_decode_previous`
is `tans_decode_core` of the same commit (bit position advanced by a masked nb per symbol).
Benchmark-only: the package never imports it.

    python benchmarks/previous_decoders.py fused FILE.tqm [--rounds 7]
        one thread, one process: a pass over every fused linear of a container (pread, XXH64, decode,
        multiply) with the current LZW and tANS cores and with the previous ones compiled into a copy of the
        fused loop, rounds interleaved (the order alternating); min and median ms per pass.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from tinyqmoe.compress.common import (E_BAD_CODE, E_BAD_STATE, E_OVERFLOW, E_TRAILING, E_TRUNCATED, LZW_CLEAR,
                                      LZW_FIRST_CODE, LZW_MAX_BITS, LZW_MIN_BITS, OK, TANS_LANES, TANS_LOG, TANS_R,
                                      freq_table_kernel, load_u64, store_u64)
from tinyqmoe.compress.tans_decode import _bits_checked, tans_table_kernel


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


_ROUND_BYTES = TANS_LANES * TANS_LOG // 8


@njit(cache=True, nogil=True)
def tans_lanes_previous(out, src, ptr, table, xs):
    # out uint8 [n] <- the bit stream src[ptr:]; xs int64 [8] initial states (< R); table from tans_table_kernel
    # -> status (§7.3.2: the states end at 0, every bit is read and the padding bits are zero)
    n, ns = out.size, src.size
    x0, x1, x2, x3, x4, x5, x6, x7 = xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7]
    x0, x1, x2, x3 = np.uint64(x0), np.uint64(x1), np.uint64(x2), np.uint64(x3)
    x4, x5, x6, x7 = np.uint64(x4), np.uint64(x5), np.uint64(x6), np.uint64(x7)
    p, bp, i = np.uint64(ptr), np.uint64(0), np.uint64(0)
    m8, m255, one = np.uint64(8), np.uint64(255), np.uint64(1)
    while True:                                      # fast path: batches of rounds whose loads are in bounds
        p += bp >> np.uint64(3)
        bp &= np.uint64(7)
        if np.uint64(ns) < p + np.uint64(_ROUND_BYTES // 2 + 8):
            break
        rounds = min((np.uint64(n) - i) // m8, (np.uint64(ns) - p - np.uint64(_ROUND_BYTES // 2 + 8))
                     // np.uint64(_ROUND_BYTES) + one)
        if rounds == 0:
            break
        for _ in range(rounds):
            p += bp >> np.uint64(3)
            bp &= np.uint64(7)
            bits = load_u64(src, p)
            t = np.uint64(table[x0])
            out[i] = np.uint8(t >> m8)
            x0 = (t >> np.uint64(16)) + ((bits >> bp) & ((one << (t & m255)) - one))
            bp += t & m255
            t = np.uint64(table[x1])
            out[i + np.uint64(1)] = np.uint8(t >> m8)
            x1 = (t >> np.uint64(16)) + ((bits >> bp) & ((one << (t & m255)) - one))
            bp += t & m255
            t = np.uint64(table[x2])
            out[i + np.uint64(2)] = np.uint8(t >> m8)
            x2 = (t >> np.uint64(16)) + ((bits >> bp) & ((one << (t & m255)) - one))
            bp += t & m255
            t = np.uint64(table[x3])
            out[i + np.uint64(3)] = np.uint8(t >> m8)
            x3 = (t >> np.uint64(16)) + ((bits >> bp) & ((one << (t & m255)) - one))
            bp += t & m255
            p += bp >> np.uint64(3)
            bp &= np.uint64(7)
            bits = load_u64(src, p)
            t = np.uint64(table[x4])
            out[i + np.uint64(4)] = np.uint8(t >> m8)
            x4 = (t >> np.uint64(16)) + ((bits >> bp) & ((one << (t & m255)) - one))
            bp += t & m255
            t = np.uint64(table[x5])
            out[i + np.uint64(5)] = np.uint8(t >> m8)
            x5 = (t >> np.uint64(16)) + ((bits >> bp) & ((one << (t & m255)) - one))
            bp += t & m255
            t = np.uint64(table[x6])
            out[i + np.uint64(6)] = np.uint8(t >> m8)
            x6 = (t >> np.uint64(16)) + ((bits >> bp) & ((one << (t & m255)) - one))
            bp += t & m255
            t = np.uint64(table[x7])
            out[i + np.uint64(7)] = np.uint8(t >> m8)
            x7 = (t >> np.uint64(16)) + ((bits >> bp) & ((one << (t & m255)) - one))
            bp += t & m255
            i += m8
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
def tans_decode_previous(out, src):
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
    return tans_lanes_previous(out, src, pos + 2 * TANS_LANES, table, xs)


def fused_ab(path: str, rounds: int) -> None:
    import os
    import time
    import types

    import tinyqmoe
    from tinyqmoe.weights import fused_loop

    src = open(fused_loop.__file__).read()
    src = src.replace("from tinyqmoe.compress.lzw_decode import lzw_decode_scratch",
                      "from previous_decoders import lzw_decode_previous as lzw_decode_scratch")
    src = src.replace("from tinyqmoe.compress.tans_decode import tans_decode_core",
                      "from previous_decoders import tans_decode_previous as tans_decode_core")
    assert "lzw_decode_previous" in src and "tans_decode_previous" in src
    prev = types.ModuleType("fused_loop_previous")
    exec(compile(src.replace("cache=True", "cache=False"), "fused_loop_previous.py", "exec"), prev.__dict__)
    m = tinyqmoe.load(path, source="fused", threads=1)
    w = m.weights
    lins = [lin for i in range(m.config.n_layers)
            for lin in (w.layer(i).wqkv, w.layer(i).wo, w.layer(i).w_gate_up, w.layer(i).w_down)] + [w.lm_head]
    r, s = w.reader, w.scratch

    def one_pass(fn):
        for lin in lins:
            x = np.ones((1, lin.shape[1]), np.float32)
            y = np.empty((1, lin.shape[0]), np.float32)
            status = np.zeros(len(lin.table), np.int64)
            fn(y, x, r.fd, r.cold, lin.table, lin.checks, lin.xxh, lin.scales, s.stored, s.raw, s.wide, s.ent, status)
            assert not status.any()

    fns = {"current": fused_loop.fused_linear, "previous": prev.fused_linear}
    for fn in fns.values():
        one_pass(fn)                                        # compile and warm up
    secs = {k: [] for k in fns}
    for rnd in range(rounds):                               # the order alternates round by round
        for k, fn in (list(fns.items()) if rnd % 2 == 0 else list(fns.items())[::-1]):
            t = time.perf_counter()
            one_pass(fn)
            secs[k].append(time.perf_counter() - t)
    raw = sum(int(lin.table[:, 2].sum()) for lin in lins)
    for k, v in secs.items():
        v = sorted(v)
        print(f"{k}: min {v[0] * 1e3:.0f} ms, median {v[len(v) // 2] * 1e3:.0f} ms per pass "
              f"({raw / v[0] / 1e6:.0f} MB/s of weights at the min)")
    print(f"current vs previous (min): {min(secs['previous']) / min(secs['current']):.2f}x; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("fused",))
    ap.add_argument("path")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    fused_ab(a.path, a.rounds)
