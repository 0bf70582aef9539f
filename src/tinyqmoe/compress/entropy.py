"""Bounds a lossless coder is measured against: order-0 entropy and the zstd-19 size of a stream."""
from __future__ import annotations

import numpy as np


def order0_entropy_bits(data: np.ndarray) -> float:
    """Total order-0 (byte histogram) entropy of a uint8 stream, in bits."""
    counts = np.bincount(np.asarray(data, np.uint8).reshape(-1), minlength=256)
    n = counts.sum()
    if n == 0:
        return 0.0
    p = counts[counts > 0] / n
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def zstd_size(data, level: int = 19, threads: int = 0) -> int:
    """Bytes of one zstd frame of the stream at `level`."""
    import zstandard

    buf = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    return len(zstandard.ZstdCompressor(level=level, threads=threads).compress(buf))
