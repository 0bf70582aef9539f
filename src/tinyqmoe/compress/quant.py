"""Weight quantization: pure functions, quantize and dequantize side by side, each reporting its error.

Layout of a quantized 2-D weight W [O, I] (O output channels, I inputs, G inputs per scale):

  qtype    bits  q (as stored, row-major)          values            scale (and offset)
  int8     8     int8  [O, I]                      -127..127         amax / 127
  int4     4     uint8 [O, I/2]  two per byte      -8..7             max|w| / d, d searched
  uint4    4     uint8 [O, I/2]  two per byte      0..15             (max - min) / 15, offset min, searched
  ternary  2     uint8 [O, I/4]  four per byte     -1, 0, +1         mean |w| (absmean)

  scale  f32 [O, I // G], values rounded to the scale dtype (fp32 or fp16) before q is computed,
         so storing the scale as fp16 loses nothing further.  W ~= q * scale.
  offset f32 [O, I // G] (uint4 only, rounded to the scale dtype like the scale): W ~= q * scale + offset,
         the form of llama.cpp's Q4_1 blocks (w = d * q + m), so weights read from a Q4_1 file come back
         as they were (to f32 rounding; exactly with fp16 scales).

Packing (4 and 2 bits): the value of input column j sits in byte j // (8/bits) at bit offset
bits * (j % (8/bits)) (the first column in the lowest bits), as a two's-complement field (int4,
ternary) or an unsigned one (uint4). A 2-bit field never holds 0b10 (-2).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tinyqmoe.errors import UsageError

QTYPE_BITS = {"int8": 8, "int4": 4, "uint4": 4, "ternary": 2}
BITS_QTYPE = {8: "int8", 4: "int4", 2: "ternary"}   # quantize(bits=...) without a qtype: symmetric
SIGNED = {"int8": True, "int4": True, "uint4": False, "ternary": True}
SCALE_DTYPES = {"f32": np.float32, "f16": np.float16}


@dataclasses.dataclass
class QuantError:
    rel_frobenius: float   # ||W - deq(q)||_F / ||W||_F
    sqnr_db: float         # 10 log10(||W||^2 / ||W - deq(q)||^2)


@dataclasses.dataclass
class QuantizedTensor:
    q: np.ndarray          # int8 [O, I] (bits 8) or packed uint8 [O, I * bits / 8] (bits 4, 2)
    scale: np.ndarray      # float32 [O, I // group]
    group: int             # inputs per scale (== I for per-channel)
    bits: int = 8          # 8 int8, 4 int4 / uint4, 2 ternary
    scale_dtype: str = "f32"   # how the scale is stored ("f32" | "f16"); values already rounded
    offset: np.ndarray | None = None   # float32 [O, I // group]: uint4 only (W = q * scale + offset)

    @property
    def shape(self) -> tuple[int, int]:
        o, b = self.q.shape
        return (o, b * 8 // self.bits)

    @property
    def qtype(self) -> str:
        return "uint4" if self.offset is not None else BITS_QTYPE[self.bits]


def quant_error(w: np.ndarray, w_hat: np.ndarray) -> QuantError:
    w = w.astype(np.float64, copy=False)
    noise = float(np.sum((w - w_hat) ** 2))
    signal = float(np.sum(w * w))
    rel = (noise / signal) ** 0.5 if signal > 0 else 0.0
    sqnr = 10.0 * np.log10(signal / noise) if noise > 0 and signal > 0 else float("inf")
    return QuantError(rel, sqnr)


def _groups(w: np.ndarray, group: int | None, per_byte: int = 1) -> tuple[np.ndarray, int]:
    """w [O, I] -> [O, I // g, g] float32 and g, after checking the shapes."""
    if w.ndim != 2:
        raise UsageError(f"quantization needs a 2-D weight, got shape {w.shape}")
    o, i = w.shape
    g = i if group in (None, 0) else int(group)
    if g <= 0 or i % g:
        raise UsageError(f"group size {g} does not divide the input dimension {i}")
    if i % per_byte:
        raise UsageError(f"input dimension {i} is not a multiple of {per_byte} (values per byte)")
    return w.astype(np.float32, copy=False).reshape(o, i // g, g), g


def _rounded_scale(s: np.ndarray, scale_dtype) -> np.ndarray:
    if isinstance(scale_dtype, str):
        if scale_dtype not in SCALE_DTYPES:
            raise UsageError(f"unknown scale dtype {scale_dtype!r} (choose from f32, f16)")
        scale_dtype = SCALE_DTYPES[scale_dtype]
    return s.astype(scale_dtype).astype(np.float32)


def _scale_name(scale_dtype) -> str:
    if isinstance(scale_dtype, str):
        return scale_dtype
    return "f16" if np.dtype(scale_dtype) == np.float16 else "f32"


ROW_BLOCK_VALUES = 1 << 20   # quantize and measure error this many values at a time: memory ~ the tensor


def _quantize_levels(w, group, scale_dtype, qmax: int, absmean: bool, per_byte: int,
                     qmin: int | None = None, search: tuple = ()):
    """Round to integers in [qmin, qmax] (qmin = -qmax by default) per group -> (q int8 [O, I], scale f32
    [O, I // g], g, QuantError). The scale is max|w| / qmax (or the mean |w|), or with `search` the one of
    max|w| / d for d in `search` with the least squared error in each group. Works in row blocks so that
    temporaries stay small next to the tensor itself."""
    qmin = -qmax if qmin is None else qmin
    wg, g = _groups(w, group, per_byte)
    o, i = w.shape
    q = np.empty((o, i), np.int8)
    scale = np.empty((o, i // g), np.float32)
    signal = noise = 0.0
    step = max(1, ROW_BLOCK_VALUES // i)
    for r in range(0, o, step):
        b = wg[r:r + step]                                   # [R, I // g, g]
        stat = np.mean(np.abs(b), axis=2) if absmean else np.max(np.abs(b), axis=2) / qmax
        s = _rounded_scale(stat, scale_dtype)
        safe = np.where(s > 0, s, 1.0)
        qb = np.clip(np.rint(b / safe[:, :, None]), qmin, qmax).astype(np.int8)
        if search:
            best = np.sum((b - qb * s[:, :, None]) ** 2, axis=2)
            amax = np.max(np.abs(b), axis=2)
            for d in search:
                sc = _rounded_scale(amax / d, scale_dtype)
                qc = np.clip(np.rint(b / np.where(sc > 0, sc, 1.0)[:, :, None]), qmin, qmax).astype(np.int8)
                err = np.sum((b - qc * sc[:, :, None]) ** 2, axis=2)
                better = err < best
                best = np.where(better, err, best)
                s = np.where(better, sc, s)
                qb = np.where(better[:, :, None], qc, qb)
        q[r:r + step] = qb.reshape(-1, i)
        scale[r:r + step] = s
        b64 = b.astype(np.float64)
        signal += float(np.sum(b64 * b64))
        noise += float(np.sum((b64 - qb * s[:, :, None].astype(np.float64)) ** 2))
    rel = (noise / signal) ** 0.5 if signal > 0 else 0.0
    sqnr = 10.0 * np.log10(signal / noise) if noise > 0 and signal > 0 else float("inf")
    return q, scale, g, QuantError(rel, sqnr)


def quantize_int8(w: np.ndarray, group: int | None = None,
                  scale_dtype=np.float32) -> tuple[QuantizedTensor, QuantError]:
    """Symmetric int8 per output channel (group=None) or per group of `group` inputs."""
    q, scale, g, err = _quantize_levels(w, group, scale_dtype, 127, False, 1)
    return QuantizedTensor(q=q, scale=scale, group=g, bits=8, scale_dtype=_scale_name(scale_dtype)), err


def dequantize_int8(qt: QuantizedTensor) -> np.ndarray:
    o, i = qt.q.shape
    g = qt.group
    return (qt.q.reshape(o, i // g, g).astype(np.float32) * qt.scale[:, :, None]).reshape(o, i)


INT4_DIVISORS = tuple(float(d) for d in np.linspace(6.0, 8.5, 11))


def quantize_int4(w: np.ndarray, group: int | None = 32,
                  scale_dtype=np.float32) -> tuple[QuantizedTensor, QuantError]:
    """4-bit per group, packed two per byte: values -8..7 times a non-negative scale chosen per group
    among max|w| / d, d in INT4_DIVISORS, for the least squared error (the -8 level and the search
    take ~30% off the error power of max|w| / 7 on the default model's Q4_1-sourced weights: mean
    tensor SQNR 21.4 against 19.8 dB, `tinyqmoe inspect`)."""
    q, scale, g, err = _quantize_levels(w, group, scale_dtype, 7, False, 2, qmin=-8, search=INT4_DIVISORS)
    return QuantizedTensor(q=pack_bits(q, 4), scale=scale, group=g, bits=4, scale_dtype=_scale_name(scale_dtype)), err


# uint4's search (quantize_uint4): besides the min/max grid, steps of (max - min) / k for these k (a group
# whose values sit on a grid that does not span all 16 levels, as Q4_1 blocks quantized with an importance
# matrix can, comes back exactly) and these fractions of the range, centred (outliers clipped).
UINT4_STEPS = (14.0, 13.0, 12.0)
UINT4_SHRINK = (0.92, 0.84)


def _affine_fit(b, d, m):
    """q (int8, 0..15) for the group values b [R, G, g] on the grid d * q + m, and its squared error [R, G]."""
    q = np.clip(np.rint((b - m[:, :, None]) / np.where(d > 0, d, 1.0)[:, :, None]), 0, 15).astype(np.int8)
    err = np.sum((b - (q * d[:, :, None] + m[:, :, None])) ** 2, axis=2)
    return q, err


def _least_squares(b, q, scale_dtype):
    """The (d, m) minimising sum (b - d q - m)^2 over each group for fixed q, rounded to the scale dtype."""
    qf = q.astype(np.float32)
    n = b.shape[2]
    sq, sb = qf.sum(2), b.sum(2)
    sqq, sqb = (qf * qf).sum(2), (qf * b).sum(2)
    det = n * sqq - sq * sq
    ok = det > 0
    safe = np.where(ok, det, 1.0)
    d = np.where(ok, (n * sqb - sq * sb) / safe, 0.0)
    m = np.where(ok, (sqq * sb - sq * sqb) / safe, sb / n)
    return _rounded_scale(np.maximum(d, 0.0), scale_dtype), _rounded_scale(m, scale_dtype)


def quantize_uint4(w: np.ndarray, group: int | None = 32, scale_dtype=np.float32,
                   search: bool = True) -> tuple[QuantizedTensor, QuantError]:
    """4-bit with a scale and an offset per group (llama.cpp's Q4_1 form), packed two per byte: values
    0..15, W ~= q * scale + offset. Per group scale = (max - min) / 15 and offset = min (both rounded to
    the scale dtype first, so q is computed against the values stored); with `search`, also the
    candidates of UINT4_STEPS and UINT4_SHRINK and a least-squares refit of (scale, offset) for the best
    q, each kept only where it lowers the group's squared error (so the search never makes a group
    worse). Works in row blocks like the symmetric quantizers."""
    wg, g = _groups(w, group, 2)
    o, i = w.shape
    q = np.empty((o, i), np.int8)
    scale = np.empty((o, i // g), np.float32)
    offset = np.empty((o, i // g), np.float32)
    signal = noise = 0.0
    step = max(1, ROW_BLOCK_VALUES // i)
    for r in range(0, o, step):
        b = wg[r:r + step]                                   # [R, I // g, g]
        lo, hi = np.min(b, axis=2), np.max(b, axis=2)
        d, m = _rounded_scale((hi - lo) / 15.0, scale_dtype), _rounded_scale(lo, scale_dtype)
        qb, best = _affine_fit(b, d, m)
        if search:
            span = hi - lo
            cands = [(span / k, lo) for k in UINT4_STEPS]
            cands += [(span * f / 15.0, lo + span * (1.0 - f) / 2.0) for f in UINT4_SHRINK]
            for dc, mc in cands:
                dc, mc = _rounded_scale(dc, scale_dtype), _rounded_scale(mc, scale_dtype)
                qc, err = _affine_fit(b, dc, mc)
                better = err < best
                best, d, m = np.where(better, err, best), np.where(better, dc, d), np.where(better, mc, m)
                qb = np.where(better[:, :, None], qc, qb)
            dc, mc = _least_squares(b, qb, scale_dtype)          # refit to the chosen levels, requantize
            qc, err = _affine_fit(b, dc, mc)
            better = err < best
            d, m = np.where(better, dc, d), np.where(better, mc, m)
            qb = np.where(better[:, :, None], qc, qb)
        q[r:r + step] = qb.reshape(-1, i)
        scale[r:r + step] = d
        offset[r:r + step] = m
        b64 = b.astype(np.float64)
        signal += float(np.sum(b64 * b64))
        w_hat = (qb * d[:, :, None] + m[:, :, None]).astype(np.float64)   # float32, as the kernels compute it
        noise += float(np.sum((b64 - w_hat) ** 2))
    rel = (noise / signal) ** 0.5 if signal > 0 else 0.0
    sqnr = 10.0 * np.log10(signal / noise) if noise > 0 and signal > 0 else float("inf")
    return QuantizedTensor(q=pack_bits(q, 4), scale=scale, group=g, bits=4, scale_dtype=_scale_name(scale_dtype),
                           offset=offset), QuantError(rel, sqnr)


def quantize_ternary(w: np.ndarray, group: int | None = 64,
                     scale_dtype=np.float32) -> tuple[QuantizedTensor, QuantError]:
    """Ternary {-1, 0, +1} times the group's mean |w| (absmean, as BitNet b1.58), four per byte."""
    q, scale, g, err = _quantize_levels(w, group, scale_dtype, 1, True, 4)
    return QuantizedTensor(q=pack_bits(q, 2), scale=scale, group=g, bits=2, scale_dtype=_scale_name(scale_dtype)), err


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """int8 [O, I] with values in the field's range -> uint8 [O, I * bits / 8], first column lowest."""
    per = 8 // bits
    o, i = q.shape
    fields = (q.astype(np.uint8) & np.uint8((1 << bits) - 1)).reshape(o, i // per, per)
    out = np.zeros((o, i // per), np.uint8)
    for k in range(per):
        out |= fields[:, :, k] << np.uint8(bits * k)
    return out


def unpack_bits(p: np.ndarray, bits: int, signed: bool = True) -> np.ndarray:
    """uint8 [O, B] -> int8 [O, B * 8 / bits], sign-extending each two's-complement field (or, with
    signed=False, zero-extending each unsigned one: uint4's 0..15)."""
    per = 8 // bits
    o, b = p.shape
    out = np.empty((o, b, per), np.int8)
    for k in range(per):
        f = ((p >> np.uint8(bits * k)) & np.uint8((1 << bits) - 1)).astype(np.int8)
        out[:, :, k] = np.where(f >= (1 << (bits - 1)), f - (1 << bits), f) if signed else f
    return out.reshape(o, b * per)


def int_values(qt: QuantizedTensor) -> np.ndarray:
    """The integer values of a quantized tensor as int8 [O, I]: int8 as is, packed fields widened
    (sign-extended, or zero-extended for uint4)."""
    return qt.q if qt.bits == 8 else unpack_bits(qt.q, qt.bits, signed=qt.offset is None)


QUANTIZERS = {"int8": quantize_int8, "int4": quantize_int4, "uint4": quantize_uint4, "ternary": quantize_ternary}


def quantize(w: np.ndarray, bits: int = 8, group: int | None = None,
             scale_dtype="f32", qtype: str | None = None) -> tuple[QuantizedTensor, QuantError]:
    """Quantize to `qtype` (int8, int4, uint4, ternary), or without one by bits: 8 -> int8, 4 -> int4
    (symmetric), 2 -> ternary."""
    if qtype is None:
        if bits not in BITS_QTYPE:
            raise UsageError(f"unsupported bit width {bits} (choose 8, 4 or 2 = ternary)")
        qtype = BITS_QTYPE[bits]
    if qtype not in QUANTIZERS:
        raise UsageError(f"unknown qtype {qtype!r} (choose from {', '.join(QUANTIZERS)})")
    return QUANTIZERS[qtype](w, group, scale_dtype)


def dequantize(qt: QuantizedTensor) -> np.ndarray:
    """float32 [O, I] for any qtype: q * scale (+ offset for uint4), computed in float32."""
    w = dequantize_int8(QuantizedTensor(q=int_values(qt), scale=qt.scale, group=qt.group))
    if qt.offset is not None:
        o, i = w.shape
        w = (w.reshape(o, i // qt.group, qt.group) + qt.offset[:, :, None]).reshape(o, i)
    return w
