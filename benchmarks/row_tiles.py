"""The decode row tiles alone (kernels/rowdot.py, or kernels/rowdot_a16.py on AVX-512 VNNI hosts, through
kernels/layer.matmul_tiles): multiply-adds per second for T tokens, weights streamed from memory or
resident in L2.

    .venv/bin/python benchmarks/row_tiles.py [--rounds 7] [--tokens 1,2,3,4,8,16]

streamed: 80 int8 matrices of 1536 x 576 (the default model's gate|up shape, 70 MB: more than any L3 here)
multiplied in turn, as a decode step reads its weights; in L2: one 512 x 576 matrix (295 KB) 20 times.
The best of --rounds. Compare two commits by running this under each one's PYTHONPATH, alternated:
numba's cache is per source tree, so each keeps its own compiled tiles.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def best_seconds(fn, rounds: int) -> float:
    fn()                                           # compile / warm
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", default="1,2,3,4,8,16")
    args = ap.parse_args()
    from tinyqmoe.hw.sysinfo import cpu_model
    from tinyqmoe.kernels import rowdot
    from tinyqmoe.kernels.layer import matmul_tiles

    rng = np.random.default_rng(0)
    streamed = [(rng.integers(-127, 128, (1536, 576), dtype=np.int8), rng.random((1536, 1), dtype=np.float32))
                for _ in range(80)]
    cached = [streamed[0][0][:512].copy(), streamed[0][1][:512].copy()]
    try:                                           # a tree before 2026-12-03 has no W8A16 rows
        from tinyqmoe.kernels.rowdot_a16 import A16
    except ImportError:
        A16 = False
    kernel = ("int16 tokens, exact int32 sums (kernels/rowdot_a16.py)" if A16 else
              f"f32 tokens, {rowdot.LANES} lanes x {rowdot.ACCS} accumulators (kernels/rowdot.py)")
    from tinyqmoe.kernels import layer
    tiles = (f"tiles of {layer.ROWS} rows x 4 tokens, 1 row x 1-3 tokens" if A16 and hasattr(layer, "ROWS")
             else f"tiles of 1 row x up to {getattr(rowdot, 'TILE', 3)} tokens")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; numba threads {os.environ.get('NUMBA_NUM_THREADS', 'all')}; "
          f"{tiles}; {kernel}\n")
    print("| tokens | streamed GMAC/s | in L2 GMAC/s |\n|---:|---:|---:|")
    for T in (int(t) for t in args.tokens.split(",")):
        x = rng.standard_normal((T, 576)).astype(np.float32)
        y, y2 = np.empty((T, 1536), np.float32), np.empty((T, 512), np.float32)

        def stream():
            for q, s in streamed:
                matmul_tiles(y, q, s, x)

        def in_l2():
            for _ in range(20):
                matmul_tiles(y2, cached[0], cached[1], x)

        macs = 80 * 1536 * 576 * T
        a = macs / best_seconds(stream, args.rounds) / 1e9
        b = 20 * 512 * 576 * T / best_seconds(in_l2, args.rounds) / 1e9
        print(f"| {T} | {a:.1f} | {b:.1f} |")


if __name__ == "__main__":
    main()
