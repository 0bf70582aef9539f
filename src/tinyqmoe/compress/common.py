"""Codec common pieces, shared by the encoders and the decoders (which never import each other).

- codec ids (docs/FORMAT.md §7), checksums (§1), the LSB-first bit writer and reader (§7.1),
- kernel status codes and how they turn into typed errors,
- the rANS constants and frequency-table layout (§7.2), shared by tANS (§7.3) with its spread,
- `load_u64`: an unaligned little-endian 64-bit load for numba kernels.
"""
from __future__ import annotations

import zlib

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from tinyqmoe.errors import CorruptionDetected, TruncatedInput, UnsupportedParameter

# ---- codec ids, as stored in the chunk index (FORMAT.md §7)
RAW, LZW, RANS, ZSTD, TANS = 0, 1, 2, 3, 4
CODEC_IDS = {"raw": RAW, "lzw": LZW, "rans": RANS, "zstd": ZSTD, "tans": TANS}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
CODEC_ALIASES = {"ans": "rans"}

# ---- LZW (FORMAT.md §7.1)
LZW_CLEAR = 256
LZW_FIRST_CODE = 257
LZW_MIN_BITS, LZW_MAX_BITS = 9, 24

# ---- rANS (FORMAT.md §7.2)
RANS_SCALE_BITS = 12
RANS_M = 1 << RANS_SCALE_BITS        # frequencies sum to M (a 4096-entry decode table: 16 KiB, in L1)
RANS_L = 1 << 23                     # states live in [L, 256 L)
RANS_BITMAP_BYTES = 32

# ---- tANS (FORMAT.md §7.3): the same frequency table, R = M states, 8 lanes on one bit stream
TANS_LOG = RANS_SCALE_BITS
TANS_R = RANS_M
TANS_LANES = 8
TANS_STEP = (TANS_R >> 1) + (TANS_R >> 3) + 3   # 2563


def crc32(data) -> int:
    """CRC-32 (zlib / PNG): crc32(b"123456789") == 0xCBF43926."""
    return zlib.crc32(data) & 0xFFFFFFFF


# ---- kernel status codes: 0 is success, negatives are errors
OK = 0
E_TRUNCATED = -1      # the stream ends before the output is complete
E_BAD_CODE = -2       # a code the dictionary does not hold (or not CLEAR when the dictionary is full)
E_OVERFLOW = -3       # a string would write past raw_size
E_TRAILING = -4       # non-zero padding bits or bytes after the last code
E_BAD_STATE = -5      # rANS: initial state out of range, or final state != L
E_BAD_TABLE = -6      # rANS / tANS: a frequency table that breaks FORMAT.md §7.2
E_LIBRARY = -8        # zstd: libzstd reported an error or a size other than raw_size

_MESSAGES = {
    E_TRUNCATED: (TruncatedInput, "stream ends before its output is complete"),
    E_BAD_CODE: (CorruptionDetected, "invalid code"),
    E_OVERFLOW: (CorruptionDetected, "decodes to more bytes than raw_size"),
    E_TRAILING: (CorruptionDetected, "non-zero padding or bytes after the end of the stream"),
    E_BAD_STATE: (CorruptionDetected, "ANS state out of range"),
    E_BAD_TABLE: (CorruptionDetected, "bad frequency table (zero, too large, non-minimal LEB128, or sum != M)"),
    E_LIBRARY: (CorruptionDetected, "libzstd rejects the frame or it holds another size than raw_size"),
}


def raise_status(status: int, codec: str) -> None:
    """Turn a kernel status into a typed error (no path: the container adds it)."""
    if status == OK:
        return
    cls, msg = _MESSAGES.get(status, (CorruptionDetected, f"status {status}"))
    raise cls(f"{codec} stream: {msg}", field=codec)


@intrinsic
def load_u64(typingctx, buf, i):
    """buf[i:i + 8] as a little-endian uint64, one unaligned load (the caller checks i + 8 <= buf.size)."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.uint8 and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.gep(data, [context.cast(builder, args[1], sig.args[1], types.intp)])
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return types.uint64(buf, i), codegen


@intrinsic
def store_u64(typingctx, buf, i, v):
    """buf[i:i + 8] = v as little-endian bytes, one unaligned store (the caller checks i + 8 <= buf.size)."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.uint8 and isinstance(i, types.Integer)
            and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.gep(data, [context.cast(builder, args[1], sig.args[1], types.intp)])
        value = context.cast(builder, args[2], sig.args[2], types.uint64)
        builder.store(value, builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(buf, i, v), codegen


# ---- bit I/O, LSB-first (FORMAT.md §7.1). State travels as (acc, nacc, pos).
@njit(cache=True, inline="always")
def put_bits(dst, pos, acc, nacc, code, width):
    """Append `width` bits of `code` to acc; spill whole bytes to dst[pos:]. -> (pos, acc, nacc)"""
    acc |= np.uint64(code) << np.uint64(nacc)
    nacc += width
    while nacc >= 8:
        dst[pos] = acc & np.uint64(0xFF)
        pos += 1
        acc >>= np.uint64(8)
        nacc -= 8
    return pos, acc, nacc


@njit(cache=True, inline="always")
def refill_bits(src, pos, acc, nacc, width):
    """Make acc hold >= width bits (width <= 24) from src[pos:], 4 bytes at a time while they last.
    -> (pos, acc, nacc, ok). At the end of a stream, unused loaded bits = nacc (whole bytes if >= 8)."""
    if nacc >= width:
        return pos, acc, nacc, True
    n = src.size
    if pos + 4 <= n:
        v = (np.uint64(src[pos]) | (np.uint64(src[pos + 1]) << np.uint64(8))
             | (np.uint64(src[pos + 2]) << np.uint64(16)) | (np.uint64(src[pos + 3]) << np.uint64(24)))
        return pos + 4, acc | (v << np.uint64(nacc)), nacc + 32, True
    while nacc < width:
        if pos >= n:
            return pos, acc, nacc, False
        acc |= np.uint64(src[pos]) << np.uint64(nacc)
        pos += 1
        nacc += 8
    return pos, acc, nacc, True


# ---- rANS frequency table (FORMAT.md §7.2): 32-byte presence bitmap + LEB128 frequencies
def write_freq_table(freq: np.ndarray) -> bytes:
    """freq uint32 [256] -> bytes."""
    bitmap = bytearray(RANS_BITMAP_BYTES)
    body = bytearray()
    for s in np.flatnonzero(freq):
        bitmap[s >> 3] |= 1 << (s & 7)
        f = int(freq[s])
        while f >= 0x80:
            body.append((f & 0x7F) | 0x80)
            f >>= 7
        body.append(f)
    return bytes(bitmap) + bytes(body)


def read_freq_table(src, raw_size: int) -> tuple[np.ndarray, int]:
    """Parse and check a frequency table at the start of src. -> (freq uint32 [256], bytes used)"""
    n = len(src)
    if n < RANS_BITMAP_BYTES:
        raise TruncatedInput("rans stream: frequency bitmap is truncated", field="rans")
    bitmap = np.frombuffer(bytes(src[:RANS_BITMAP_BYTES]), np.uint8)
    present = np.flatnonzero(np.unpackbits(bitmap, bitorder="little"))
    freq = np.zeros(256, np.uint32)
    pos = RANS_BITMAP_BYTES
    for s in present:
        value, shift = 0, 0
        for k in range(2):
            if pos >= n:
                raise TruncatedInput("rans stream: frequency table is truncated", field="rans")
            b = int(src[pos])
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b == 0 and k > 0:
                    raise CorruptionDetected("rans stream: non-minimal LEB128 frequency", field="rans")
                break
        else:
            raise CorruptionDetected("rans stream: LEB128 frequency longer than 2 bytes", field="rans")
        if value == 0 or value > RANS_M:
            raise CorruptionDetected(f"rans stream: frequency {value} of symbol {s} out of range", field="rans")
        freq[s] = value
    total = int(freq.sum())
    if raw_size == 0 and total != 0:
        raise CorruptionDetected("rans stream: symbols present in an empty chunk", field="rans")
    if raw_size > 0 and total != RANS_M:
        raise CorruptionDetected(f"rans stream: frequencies sum to {total}, not {RANS_M}", field="rans")
    return freq, pos


def normalize_freqs(counts: np.ndarray) -> np.ndarray:
    """Symbol counts [256] -> frequencies [256] summing to M, each present symbol >= 1 (the writer's choice,
    shared by the rANS and tANS encoders)."""
    total = int(counts.sum())
    freq = np.zeros(256, np.int64)
    if total == 0:
        return freq
    present = counts > 0
    freq[present] = np.maximum(1, (counts[present] * RANS_M) // total)
    diff = RANS_M - int(freq.sum())
    if diff > 0:
        # hand the rounding remainder to the symbols that lost the most (largest fractional parts)
        frac = np.where(present, counts * RANS_M / total - freq, -1.0)
        for s in np.argsort(-frac, kind="stable")[:diff]:
            freq[s] += 1
    while diff < 0:                  # too many symbols forced up to 1: take from the largest
        s = int(np.argmax(freq))
        take = min(-diff, int(freq[s]) - 1)
        freq[s] -= take
        diff += take
    return freq


def order0_model(data) -> tuple[np.ndarray, np.ndarray, bytes, np.ndarray]:
    """The static order-0 model both ANS encoders start from: (src uint8 [n], freq [256] summing to M,
    the §7.2 frequency table bytes, cumulative freq [256])."""
    src = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    freq = normalize_freqs(np.bincount(src, minlength=256))
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]]).astype(np.int64)
    return src, freq, write_freq_table(freq), cum


# ---- tANS spread (FORMAT.md §7.3.1): shared by the encoder and the decoder
@njit(cache=True, nogil=True)
def tans_spread(table, freq):
    # table uint32 [R] <- the symbol of each state: the symbols in increasing order, each f[s] times, placed at
    # states 0, STEP, 2 STEP, ... (mod R); STEP is odd, so every state gets exactly one (zstd's FSE spread)
    p = 0
    for s in range(256):
        for _ in range(freq[s]):
            table[p] = s
            p = (p + TANS_STEP) & (TANS_R - 1)


@intrinsic
def floor_log2(typingctx, x):
    """floor(log2(x)) of an integer x >= 1 (one lzcnt)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.uint64)
        lz = builder.ctlz(v, ir.Constant(ir.IntType(1), 1))
        return builder.sub(ir.Constant(ir.IntType(64), 63), lz)

    return types.int64(x), codegen


@njit(cache=True, nogil=True)
def freq_table_kernel(freq, src, raw_size):
    # freq int64 [256] <- the frequency table at the start of src uint8 (§7.2); -> bytes used, or a status < 0
    n = src.size
    if n < RANS_BITMAP_BYTES:
        return E_TRUNCATED
    freq[:] = 0
    pos, total = RANS_BITMAP_BYTES, 0
    for sym in range(256):
        if not (src[sym >> 3] >> (sym & 7)) & 1:
            continue
        if pos >= n:
            return E_TRUNCATED
        f = np.int64(src[pos] & 0x7F)
        if src[pos] & 0x80:                     # a second (and last) LEB128 byte, non-zero (minimal)
            if pos + 1 >= n:
                return E_TRUNCATED
            if src[pos + 1] == 0 or src[pos + 1] & 0x80:
                return E_BAD_TABLE
            f |= np.int64(src[pos + 1]) << 7
            pos += 1
        pos += 1
        if f == 0 or f > RANS_M or total + f > RANS_M:
            return E_BAD_TABLE
        freq[sym] = f
        total += f
    if total != (RANS_M if raw_size > 0 else 0):
        return E_BAD_TABLE
    return pos


def check_codec_id(codec_id: int) -> str:
    name = CODEC_NAMES.get(int(codec_id))
    if name is None:
        raise UnsupportedParameter(f"unknown codec id {codec_id}", field="codec")
    return name
