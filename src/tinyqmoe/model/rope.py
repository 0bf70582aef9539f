"""Rotary position embedding frequencies, including Llama-3 frequency scaling."""
from __future__ import annotations

import math

import numpy as np

from tinyqmoe.model.config import LlamaConfig


def inv_frequencies(c: LlamaConfig) -> np.ndarray:
    """(E/2,) float32 inverse frequencies, as transformers computes them."""
    E = c.head_dim
    inv = (1.0 / (np.float32(c.rope_theta) ** (np.arange(0, E, 2, dtype=np.float32) / np.float32(E))))
    inv = inv.astype(np.float32)
    s = c.rope_scaling
    if not s:
        return inv
    # Llama 3.1+: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between.
    factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old_len = float(s["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def cos_sin(inv_freq: np.ndarray, pos0: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, E/2) cos and sin for positions pos0 .. pos0+T-1."""
    angles = np.arange(pos0, pos0 + T, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.cos(angles), np.sin(angles)
