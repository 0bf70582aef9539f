"""One compiled call per linear: read, check, decode and multiply every chunk with no Python per chunk.

`fused_linear` is a numba routine whose parallel loop walks a linear's chunks (several tensors
stacked, e.g. q|k|v): each thread preads a chunk into its own buffer (libc `pread`, called from
nopython code by symbol), checks its XXH64 (format 2.x, compress/xxh64.py) or CRC-32 (1.x, zlib's, called
like pread), decodes it (raw, LZW, tANS, rANS,
zstd via libzstd), widens 4-bit / ternary fields to int8 (refusing a ternary `10`, FORMAT §5) and
multiplies its rows into the output. A chunk that fails sets its status; the Python side raises the
typed error naming the tensor and the chunk, exactly as compress/reader.py would. uint4 tensors (scales
(O, 2, G): scales and offsets, kernels/rowdot.py) run here only as packed rows of whole 32-input
blocks (weights/fused.py `fusable`), multiplied straight from the packed bytes.

Shape letters: T tokens, I inputs, O output rows (all stacked tensors), G scale groups per row.
"""
from __future__ import annotations

import ctypes
import ctypes.util

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from tinyqmoe.compress.common import E_TRAILING, E_TRUNCATED, LZW, OK, RANS, RAW, TANS, ZSTD
from tinyqmoe.compress.lzw_decode import lzw_decode_scratch
from tinyqmoe.compress.rans_decode import rans_decode_core
from tinyqmoe.compress.tans_decode import tans_decode_core
from tinyqmoe.compress.xxh64 import xxh64_core
from tinyqmoe.compress.zstd_decode import LIBZSTD, zstd_decode_core
from tinyqmoe.kernels.gemm_i8 import panel_rows, panel_rows_packed
from tinyqmoe.kernels.layer import activations, rows_times_tokens
from tinyqmoe.kernels.matvec import q8_row_dot
from tinyqmoe.kernels.rowdot import BLOCK

E_READ = -20          # pread returned fewer bytes than the chunk's stored size
E_CHECKSUM = -21      # the chunk's bytes do not match its checksum
E_UNSUPPORTED = -22   # a codec this loop cannot decode (the caller falls back to the reader)
E_TERNARY = -23       # a ternary field holds 0b10 (FORMAT §5)

# C functions called from nopython code by symbol name (so the compiled loop can be cached), declared
# the way compress/zstd_decode.py declares libzstd's: pointers and sizes as uintp.
_pread = types.ExternalFunction("pread", types.int64(types.int32, types.uintp, types.uintp, types.int64))
_fadvise = types.ExternalFunction("posix_fadvise", types.int32(types.int32, types.int64, types.int64, types.int32))
_crc32 = types.ExternalFunction("crc32", types.uint64(types.uint64, types.uintp, types.uint32))   # zlib


def _load_zlib() -> None:
    """Make zlib's crc32 visible to compiled code (by symbol name, so the loop stays cacheable)."""
    import llvmlite.binding as llvm

    llvm.load_library_permanently(ctypes.util.find_library("z") or "libz.so.1")


_load_zlib()
HAVE_ZSTD = LIBZSTD is not None

POSIX_FADV_DONTNEED = 4


@njit(nogil=True, cache=True)
def decode_core(codec, dst, src, ent) -> int:
    """Decode one chunk's stored bytes src (uint8) into dst (uint8 [raw_size]) -> status (0 ok), with the
    codec modules' own compiled cores (the same code the reader runs); ent int64 [>= raw_size + 258] is
    the caller's reused LZW dictionary."""
    if codec == RAW:
        if src.size != dst.size:
            return E_TRAILING if src.size > dst.size else E_TRUNCATED
        dst[:] = src
        return OK
    if codec == LZW:
        return lzw_decode_scratch(dst, src, ent)
    if codec == TANS:
        return tans_decode_core(dst, src)
    if codec == RANS:
        return rans_decode_core(dst, src)
    if codec == ZSTD and HAVE_ZSTD:
        return zstd_decode_core(dst, src)
    return E_UNSUPPORTED


@njit(nogil=True, cache=True)
def widen_fields(out, packed, bits) -> bool:
    """packed uint8 [n] of `bits`-bit (4 or 2) two's-complement fields, lowest bits first -> out int8
    [n * 8 / bits]; False if a ternary (2-bit) field holds 0b10. Branch-free, so LLVM vectorizes it:
    8x (4-bit) and 2.8x (ternary) the field-by-field loop with an early exit (3.5 and 2.6 G fields/s on
    one Zen 3 core)."""
    n = packed.size
    if bits == 4:
        for i in range(n):
            b = np.int32(packed[i])
            out[2 * i] = np.int8(((b & 15) ^ 8) - 8)          # sign-extend a 4-bit field
            out[2 * i + 1] = np.int8(((b >> 4) ^ 8) - 8)
        return True
    bad = 0
    for i in range(n):
        b = np.int32(packed[i])
        for k in range(4):
            f = (b >> (2 * k)) & 3
            bad |= f == 2
            out[4 * i + k] = np.int8((f ^ 2) - 2)               # 0, 1, 3 -> 0, 1, -1 (and 2 -> -2, refused)
    return bad == 0


def row_dot(q_row, s_row, x_row):
    """(q_row * scales (+ offsets)) . x_row in compiled code: s_row (G,) scales, or (2, G) scales and
    offsets (the rows' sums of x per group times the offsets added). fused_linear takes uint4 (2-D
    scales) only where the rowdot tiles fit (weights/fused.py `fusable`), so the second form is what
    lets it compile for them, not a path their rows run."""
    raise NotImplementedError("compiled code only")


@overload(row_dot, inline="always")
def _row_dot(q_row, s_row, x_row):
    if s_row.ndim == 1:
        return lambda q_row, s_row, x_row: q8_row_dot(q_row, s_row, x_row)

    def with_offsets(q_row, s_row, x_row):   # q8_row_dot with the scales, plus each group's x sum x offset
        G = s_row.shape[1]
        gs = q_row.shape[0] // G
        acc = q8_row_dot(q_row, s_row[0], x_row)
        for g in range(G):
            xs = np.float32(0.0)
            for i in range(g * gs, (g + 1) * gs):
                xs += x_row[i]
            acc += xs * s_row[1, g]
        return acc
    return with_offsets


def panel_chunk(y, q, s, xp, xsp, xb, T, r0):
    """Rows q times the packed activations into y[:, r0:r0 + R], in compiled code: int8 q (R, I) with
    scales s (R, G) by kernels/gemm_i8.panel_rows, packed 4-bit q (R, I/2) with s (R, G) or (R, 2, G) by
    panel_rows_packed; a no-op for int8 rows with (R, 2, G) (uint4 that fused_linear only multiplies
    packed: the branch must compile for them)."""
    raise NotImplementedError("compiled code only")


@overload(panel_chunk, inline="always")
def _panel_chunk(y, q, s, xp, xsp, xb, T, r0):
    if q.dtype == types.uint8:
        return lambda y, q, s, xp, xsp, xb, T, r0: panel_rows_packed(y, q, s, xp, xsp, xb, T, r0)
    if s.ndim != 2:
        return lambda y, q, s, xp, xsp, xb, T, r0: None

    return lambda y, q, s, xp, xsp, xb, T, r0: panel_rows(y, q, s, xp, xsp, T, r0)


@njit(parallel=True, fastmath=True, nogil=True, cache=True)   # fastmath: q8_row_dot inlines here and must vectorize
def fused_linear(y, x, fd, cold, table, checks, xxh, scales, stored_buf, raw_buf, wide_buf, ent, status,
                 panel, xp, xsp, xb):
    """y (T, O) <- W x for the chunks of `table` int64 [n, 7] (offset, stored_size, raw_size, out_row,
    row_count, codec, bits); checks uint64 [n]: XXH64s if `xxh` (format 2.x) else CRC-32s (1.x);
    scales f32 (O, G), or (O, 2, G) scales and offsets (uint4) (unused for bits 32);
    per-thread buffers [threads, ...]; status int64 [n] <- 0 or the chunk's error. With `panel`, integer
    rows (8-bit, packed 4-bit, or widened ternary) multiply the activations packed in xp, xsp, xb as int8
    x int8 (kernels/gemm_i8.py: a long prompt, as a resident Linear does)."""
    n = table.shape[0]
    T, I = x.shape
    G = scales.shape[-1]
    tiles = I % BLOCK == 0 and G > 0 and (I // G) % BLOCK == 0   # kernels/rowdot.py fits
    # uint4 rows multiply int8 activations in the row tiles (kernels/layer.py); with `panel` no chunk runs
    # the tiles (xp, xsp, xb hold the activations), so none are quantized for them
    a = activations(x[:0] if panel else x, raw_buf, scales)
    for i in prange(n):
        tid = numba.get_thread_id()
        off, size, raw = table[i, 0], table[i, 1], table[i, 2]
        r0, rc, codec, bits = table[i, 3], table[i, 4], table[i, 5], table[i, 6]
        dst = raw_buf[tid, :raw]
        direct = codec == RAW and size == raw
        src = dst if direct else stored_buf[tid, :size]
        if _pread(np.int32(fd), src.ctypes.data, np.uintp(size), off) != size:
            status[i] = E_READ
            continue
        if xxh:
            check = xxh64_core(src, np.uint64(codec + 256 * raw))   # container_format.chunk_seed
        else:
            check = _crc32(np.uint64(0), src.ctypes.data, np.uint32(size))
        if check != checks[i]:
            status[i] = E_CHECKSUM
            continue
        if cold:
            _fadvise(np.int32(fd), off, size, np.int32(POSIX_FADV_DONTNEED))
        if not direct:
            st = decode_core(codec, dst, src, ent[tid])
            if st != OK:
                status[i] = st
                continue
        if bits == 32:
            w = dst.view(np.float32).reshape(rc, I)
            for r in range(rc):
                for t in range(T):
                    acc = np.float32(0.0)
                    for j in range(I):
                        acc += w[r, j] * x[t, j]
                    y[t, r0 + r] = acc
            continue
        if bits == 4 and tiles:   # packed rows straight into the kernels: nibbles unpacked in registers
            p = dst.reshape(rc, I // 2)
            if panel:
                panel_chunk(y, p, scales[r0:r0 + rc], xp, xsp, xb, T, r0)
            else:
                rows_times_tokens(y, r0, p, 0, scales, r0, rc, a, False)
            continue
        if bits == 8:
            q = dst.view(np.int8).reshape(rc, I)
        else:
            wide = wide_buf[tid, :rc * I]
            if not widen_fields(wide, dst, bits):
                status[i] = E_TERNARY
                continue
            q = wide.reshape(rc, I)
        if panel:
            panel_chunk(y, q, scales[r0:r0 + rc], xp, xsp, xb, T, r0)
        elif tiles:
            rows_times_tokens(y, r0, q, 0, scales, r0, rc, a, False)
        else:
            for r in range(rc):
                for t in range(T):
                    y[t, r0 + r] = row_dot(q[r], scales[r0 + r], x[t])
