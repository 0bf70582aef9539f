"""Latency-based tiling: loop-nest model, footprints, legality, tile selection, codegen.

Public API for the engine:
    matmul_blocks(m, n, k, elem_bytes, cache) -> {"m": bm, "n": bn, "k": bk, ...}
    codec_chunk_bytes(cache) -> int
(cache is a tinyqmoe.hw.CacheSizes, e.g. tinyqmoe.hw.cache_sizes()).
"""
from __future__ import annotations

from functools import lru_cache

from tinyqmoe.tiling.ir import Array, Nest, loop, stmt
from tinyqmoe.tiling.plan import TilePlan
from tinyqmoe.tiling.select import select_tiles


@lru_cache(maxsize=16)
def _matmul_nest(elem_bytes: int) -> Nest:
    arrays = (Array("C", ("M", "N"), elem_bytes), Array("A", ("M", "K"), elem_bytes),
              Array("B", ("K", "N"), elem_bytes))
    body = stmt("C[m, n] += A[m, k] * B[k, n]", ["C[m, n]"], ["C[m, n]", "A[m, k]", "B[k, n]"])
    return Nest("matmul", loop("m", 0, "M", loop("k", 0, "K", loop("n", 0, "N", body))),
                arrays, ("M", "N", "K"), (), ("m", "k", "n"))


def matmul_blocks(m: int, n: int, k: int, elem_bytes: int, cache, level: str = "L2",
                  fraction: float = 0.5) -> dict:
    """Block sizes for C[m, n] += A[m, k] @ B[k, n] so that one block's footprint
    (bm*bk + bk*bn + bm*bn elements) fits `fraction` of the cache level.

    Returns {"m": bm, "n": bn, "k": bk, "order": ("m", "k", "n") (outer -> inner, blocks and
    points alike), "footprint_bytes": ..., "capacity_bytes": ..., "level": "L2"}.
    A block size equal to the dimension means "do not block that dimension".
    """
    if min(m, n, k) < 1 or elem_bytes < 1:
        from tinyqmoe.errors import UsageError
        raise UsageError(f"matmul_blocks: sizes must be >= 1 (m={m}, n={n}, k={k}, "
                         f"elem_bytes={elem_bytes})")
    plan = select_tiles(_matmul_nest(int(elem_bytes)), {"M": m, "N": n, "K": k}, cache,
                        level, fraction)
    t = plan.tile
    return {"m": t["m"], "n": t["n"], "k": t["k"], "order": plan.order,
            "footprint_bytes": plan.footprint_bytes, "capacity_bytes": plan.capacity_bytes,
            "level": plan.level}


def codec_chunk_bytes(cache) -> int:
    """Codec chunk size: the largest power of two <= half the measured L2 (a chunk's
    compressed input and decoded output then stay in L2 together), clamped to
    [64 KiB, 4 MiB]."""
    half = max(1, int(cache.l2) // 2)
    size = 1 << (half.bit_length() - 1)
    return max(64 << 10, min(4 << 20, size))


__all__ = ["matmul_blocks", "codec_chunk_bytes", "select_tiles", "TilePlan"]
