"""GGML block formats -> float32, in numpy, vectorised over blocks.

A quantized row is a sequence of blocks; each block holds `block_size` weights in `type_size`
bytes (ggml-common.h). f16 fields are IEEE half, little-endian. Shape letters: N blocks,
B weights per block. Every `_deq_*` kernel fills `out` [N, B] float32 from `blocks` [N, type_size]
uint8 and matches `gguf.quants.dequantize` bit for bit (tests/test_gguf_dequant.py); it runs
over chunks of ~64K weights so the temporaries stay in cache (~10x faster than gguf's reference).

  type   B    bytes  block layout (in order)                    weight
  F32    1    4      f32                                        x
  F16    1    2      f16                                        x
  BF16   1    2      upper half of an f32                       x
  Q4_0   32   18     d:f16, qs[16] (nibbles)                    d * (q - 8)
  Q4_1   32   20     d:f16, m:f16, qs[16]                       d * q + m
  Q5_0   32   22     d:f16, qh[4] (bit 4 of each), qs[16]       d * (q - 16)
  Q5_1   32   24     d:f16, m:f16, qh[4], qs[16]                d * q + m
  Q8_0   32   34     d:f16, qs[32]:i8                           d * q
  Q2_K   256  84     scales[16] (4-bit sc|m), qs[64], d, dmin   d*sc * q - dmin*m   (per 16)
  Q3_K   256  110    hmask[32], qs[64], scales[12] (6-bit), d   d*(sc-32) * q       (per 16)
  Q4_K   256  144    d, dmin, scales[12] (6-bit sc,m), qs[128]  d*sc * q - dmin*m   (per 32)
  Q5_K   256  176    d, dmin, scales[12], qh[32], qs[128]       d*sc * q - dmin*m   (per 32)
  Q6_K   256  210    ql[128], qh[64], scales[16]:i8, d:f16      d*sc * (q - 32)     (per 16)

In Q4_0/Q4_1/Q5_* the low nibbles of qs are weights 0..15 and the high nibbles 16..31.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

CHUNK_WEIGHTS = 1 << 16   # weights per numpy pass: 256 KB of float32 output


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    """The f16 field at byte `at` of every block, as float32 [N, 1]."""
    return blocks[:, at:at + 2].view(np.float16).astype(np.float32)


def _nibbles(out: np.ndarray, qs: np.ndarray) -> None:
    """out [N, 2, K] <- low nibbles of qs [N, K] in half 0, high nibbles in half 1."""
    np.bitwise_and(qs, 15, out=out[:, 0, :], casting="unsafe")
    np.right_shift(qs, 4, out=out[:, 1, :], casting="unsafe")


def _deq_q4_0(out, blocks):  # out [N, 32] <- blocks [N, 18]
    o = out.reshape(-1, 2, 16)
    _nibbles(o, blocks[:, 2:18])
    out -= 8
    out *= _f16(blocks, 0)


def _deq_q4_1(out, blocks):  # out [N, 32] <- blocks [N, 20]
    o = out.reshape(-1, 2, 16)
    _nibbles(o, blocks[:, 4:20])
    out *= _f16(blocks, 0)
    out += _f16(blocks, 2)


def _five_bit(out, qh, qs):  # out [N, 32] <- qh [N, 4] (bit i = bit 4 of weight i), qs [N, 16]
    high = np.unpackbits(qh, axis=1, bitorder="little") << 4  # [N, 32], weight order
    o = out.reshape(-1, 2, 16)
    np.bitwise_or(qs & 15, high[:, :16], out=o[:, 0, :], casting="unsafe")
    np.bitwise_or(qs >> 4, high[:, 16:], out=o[:, 1, :], casting="unsafe")


def _deq_q5_0(out, blocks):  # out [N, 32] <- blocks [N, 22]
    _five_bit(out, blocks[:, 2:6], blocks[:, 6:22])
    out -= 16
    out *= _f16(blocks, 0)


def _deq_q5_1(out, blocks):  # out [N, 32] <- blocks [N, 24]
    _five_bit(out, blocks[:, 4:8], blocks[:, 8:24])
    out *= _f16(blocks, 0)
    out += _f16(blocks, 2)


def _deq_q8_0(out, blocks):  # out [N, 32] <- blocks [N, 34]
    np.multiply(blocks[:, 2:34].view(np.int8), _f16(blocks, 0), out=out)


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 8 six-bit scales and mins [N, 8] from scales [N, 12]."""
    lo, mid, hi = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([lo & 63, (hi & 15) | ((lo >> 6) << 4)], axis=1)
    mn = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _apply_k(out, blocks, n_sub):  # out [N, 256] <- out * (d * sc) - dmin * m, per sub-block
    sc, mn = _k_scales(blocks[:, 4:16])
    o = out.reshape(-1, n_sub, 256 // n_sub)
    o *= (_f16(blocks, 0) * sc)[:, :, None]
    o -= (_f16(blocks, 2) * mn)[:, :, None]


def _deq_q4_k(out, blocks):  # out [N, 256] <- blocks [N, 144]
    qs = blocks[:, 16:144].reshape(-1, 4, 32)
    o = out.reshape(-1, 4, 2, 32)      # 4 chunks of 32 bytes: low nibbles, then high nibbles
    np.bitwise_and(qs, 15, out=o[:, :, 0, :], casting="unsafe")
    np.right_shift(qs, 4, out=o[:, :, 1, :], casting="unsafe")
    _apply_k(out, blocks, 8)


_BIT_OF = np.arange(8, dtype=np.uint8)[None, :, None]


def _deq_q5_k(out, blocks):  # out [N, 256] <- blocks [N, 176]
    qh = blocks[:, 16:48][:, None, :]               # [N, 1, 32]: bit k -> weights 32k..32k+31
    qs = blocks[:, 48:176].reshape(-1, 4, 1, 32)
    low = (qs >> np.array([0, 4], np.uint8)[None, None, :, None]) & 15    # [N, 4, 2, 32]
    high = ((qh >> _BIT_OF) & 1) << 4                                      # [N, 8, 32]
    np.bitwise_or(low.reshape(-1, 8, 32), high, out=out.reshape(-1, 8, 32), casting="unsafe")
    _apply_k(out, blocks, 8)


def _deq_q6_k(out, blocks):  # out [N, 256] <- blocks [N, 210]
    ql = blocks[:, 0:128].reshape(-1, 2, 1, 2, 32)   # [N, half, -, byte group, 32]
    qh = blocks[:, 128:192].reshape(-1, 2, 1, 32)    # [N, half, -, 32]
    low = (ql >> np.array([0, 4], np.uint8)[None, None, :, None, None]) & 15   # [N, 2, 2, 2, 32]
    high = ((qh >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3) << 4  # [N, 2, 4, 32]
    np.bitwise_or(low.reshape(-1, 2, 4, 32), high, out=out.reshape(-1, 2, 4, 32), casting="unsafe")
    out -= 32
    o = out.reshape(-1, 16, 16)
    o *= (_f16(blocks, 208) * blocks[:, 192:208].view(np.int8))[:, :, None]


def _deq_q2_k(out, blocks):  # out [N, 256] <- blocks [N, 84]
    qs = blocks[:, 16:80].reshape(-1, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]
    np.bitwise_and(qs >> shifts, 3, out=out.reshape(-1, 2, 4, 32), casting="unsafe")
    sc = blocks[:, 0:16]
    o = out.reshape(-1, 16, 16)
    o *= (_f16(blocks, 80) * (sc & 15))[:, :, None]
    o -= (_f16(blocks, 82) * (sc >> 4))[:, :, None]


def _deq_q3_k(out, blocks):  # out [N, 256] <- blocks [N, 110]
    hmask = blocks[:, 0:32][:, None, :]
    qs = blocks[:, 32:96].reshape(-1, 2, 1, 32)
    s = blocks[:, 96:108]
    low4 = np.concatenate([s[:, 0:8] & 15, s[:, 0:8] >> 4], axis=1)                     # [N, 16]
    high2 = ((s[:, None, 8:12] >> np.array([0, 2, 4, 6], np.uint8)[None, :, None]) & 3)  # [N, 4, 4]
    scales = (low4 | (high2.reshape(-1, 16) << 4)).astype(np.float32) - 32
    low = (qs >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3   # [N, 2, 4, 32]
    minus4 = (((hmask >> _BIT_OF) & 1) ^ 1) << 2                             # [N, 8, 32]
    np.subtract(low.reshape(-1, 8, 32), minus4, out=out.reshape(-1, 8, 32), dtype=np.float32)
    o = out.reshape(-1, 16, 16)
    o *= (_f16(blocks, 108) * scales)[:, :, None]


def _deq_f32(out, blocks):  # out [N, 1] <- blocks [N, 4]
    out[:] = blocks.view(np.float32)


def _deq_f16(out, blocks):  # out [N, 1] <- blocks [N, 2]
    out[:] = blocks.view(np.float16)


def _deq_bf16(out, blocks):  # out [N, 1] <- blocks [N, 2]
    out.view(np.uint32)[:] = blocks.view(np.uint16).astype(np.uint32) << 16


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str             # lower-case GGML type name, as recorded in Checkpoint.source_dtypes
    block_size: int       # weights per block
    type_size: int        # bytes per block
    kernel: Callable[[np.ndarray, np.ndarray], None]


# GGML type id -> layout (ids from ggml.h's enum ggml_type)
LAYOUTS: dict[int, Layout] = {
    0: Layout("f32", 1, 4, _deq_f32),
    1: Layout("f16", 1, 2, _deq_f16),
    2: Layout("q4_0", 32, 18, _deq_q4_0),
    3: Layout("q4_1", 32, 20, _deq_q4_1),
    6: Layout("q5_0", 32, 22, _deq_q5_0),
    7: Layout("q5_1", 32, 24, _deq_q5_1),
    8: Layout("q8_0", 32, 34, _deq_q8_0),
    10: Layout("q2_k", 256, 84, _deq_q2_k),
    11: Layout("q3_k", 256, 110, _deq_q3_k),
    12: Layout("q4_k", 256, 144, _deq_q4_k),
    13: Layout("q5_k", 256, 176, _deq_q5_k),
    14: Layout("q6_k", 256, 210, _deq_q6_k),
    30: Layout("bf16", 1, 2, _deq_bf16),
}

# names of the GGML types we do not read, for error messages
OTHER_TYPE_NAMES = {9: "q8_1", 15: "q8_k", 16: "iq2_xxs", 17: "iq2_xs", 18: "iq3_xxs", 19: "iq1_s",
                    20: "iq4_nl", 21: "iq3_s", 22: "iq2_s", 23: "iq4_xs", 24: "i8", 25: "i16",
                    26: "i32", 27: "i64", 28: "f64", 29: "iq1_m", 34: "tq1_0", 35: "tq2_0",
                    39: "mxfp4", 40: "nvfp4", 41: "q1_0"}


def q4_0_values(raw: np.ndarray, rows: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """A Q4_0 tensor's own numbers, not their product: (q uint8 [rows, n_in], 0..15 in column order;
    d float32 [rows, n_in // 32], each an f16 value) with W = d * (q - 8). d is negative where llama.cpp's
    quantizer found a block's extreme positive (d = extreme / -8)."""
    blocks = raw.reshape(rows * (n_in // 32), 18)
    q = np.empty((blocks.shape[0], 2, 16), np.uint8)
    _nibbles(q, blocks[:, 2:18])
    return q.reshape(rows, n_in), _f16(blocks, 0).reshape(rows, n_in // 32)


def type_name(ggml_type: int) -> str:
    layout = LAYOUTS.get(ggml_type)
    return layout.name if layout else OTHER_TYPE_NAMES.get(ggml_type, f"type {ggml_type}")


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> np.ndarray:
    """float32 array of `shape` from the tensor's bytes `raw` (uint8, as stored in the file)."""
    layout = LAYOUTS[ggml_type]
    blocks = raw.reshape(-1, layout.type_size)                 # [N, type_size]
    out = np.empty((blocks.shape[0], layout.block_size), np.float32)  # [N, B]
    step = max(1, CHUNK_WEIGHTS // layout.block_size)
    with np.errstate(invalid="ignore", over="ignore"):  # inf/nan scales give inf/nan, as in ggml
        for i in range(0, blocks.shape[0], step):
            layout.kernel(out[i:i + step], blocks[i:i + step])
    return out.reshape(shape)
