"""Weight quantization: pure functions, quantize and dequantize side by side, each reporting its error.

Layout of a quantized 2-D weight W [O, I] (O output channels, I inputs):
  q      int8 [O, I]        symmetric: W ~= q * scale, q in [-127, 127]
  scale  f32  [O, I // G]   one scale per output channel and per group of G inputs
                            (G == I: one scale per output channel)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tinyqmoe.errors import UsageError


@dataclasses.dataclass
class QuantError:
    rel_frobenius: float   # ||W - deq(q)||_F / ||W||_F
    sqnr_db: float         # 10 log10(||W||^2 / ||W - deq(q)||^2)


@dataclasses.dataclass
class QuantizedTensor:
    q: np.ndarray          # int8 [O, I]
    scale: np.ndarray      # float32 [O, I // group]
    group: int             # inputs per scale (== I for per-channel)
    bits: int = 8

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape


def quant_error(w: np.ndarray, w_hat: np.ndarray) -> QuantError:
    w = w.astype(np.float64, copy=False)
    noise = float(np.sum((w - w_hat) ** 2))
    signal = float(np.sum(w * w))
    rel = (noise / signal) ** 0.5 if signal > 0 else 0.0
    sqnr = 10.0 * np.log10(signal / noise) if noise > 0 and signal > 0 else float("inf")
    return QuantError(rel, sqnr)


def quantize_int8(w: np.ndarray, group: int | None = None,
                  scale_dtype=np.float32) -> tuple[QuantizedTensor, QuantError]:
    """Symmetric int8 per output channel (group=None) or per group of `group` inputs."""
    if w.ndim != 2:
        raise UsageError(f"int8 quantization needs a 2-D weight, got shape {w.shape}")
    o, i = w.shape
    g = i if group in (None, 0) else int(group)
    if g <= 0 or i % g:
        raise UsageError(f"group size {g} does not divide the input dimension {i}")
    wg = w.astype(np.float32, copy=False).reshape(o, i // g, g)
    amax = np.max(np.abs(wg), axis=2)
    scale = (amax / 127.0).astype(scale_dtype).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(wg / safe[:, :, None]), -127, 127).astype(np.int8).reshape(o, i)
    qt = QuantizedTensor(q=q, scale=scale, group=g)
    return qt, quant_error(w, dequantize_int8(qt))


def dequantize_int8(qt: QuantizedTensor) -> np.ndarray:
    o, i = qt.q.shape
    g = qt.group
    return (qt.q.reshape(o, i // g, g).astype(np.float32) * qt.scale[:, :, None]).reshape(o, i)
