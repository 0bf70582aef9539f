"""Compile-time cost of the tiling decision, per nest: selection vs legality check.

    .venv/bin/python benchmarks/tiling_selection_time.py [--calls 50]

Selection (order + footprint/traffic scan over all candidate tile sizes) is timed as the
median of --calls calls; the legality check (Fourier-Motzkin, once per nest structure,
independent of sizes and caches) as the median of 5. Cache sizes from hw.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tinyqmoe.hw import cache_sizes  # noqa: E402
from tinyqmoe.tiling.legality import check_band  # noqa: E402
from tinyqmoe.tiling.polybench import KERNELS  # noqa: E402
from tinyqmoe.tiling.select import select_tiles  # noqa: E402


def median_time(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50)
    args = ap.parse_args()
    cache = cache_sizes()
    print(f"cache: {cache}")
    print("| nest | MEDIUM selection | LARGE selection | candidates | legality check |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for kernel in KERNELS.values():
        for nest in kernel.nests:
            if not nest.band:
                continue
            cells = []
            for size in ("MEDIUM", "LARGE"):
                params = kernel.sizes[size]
                plan = select_tiles(nest, params, cache)
                t = median_time(lambda: select_tiles(nest, params, cache), args.calls)
                worst = max(worst, t)
                cells.append(f"{t * 1e6:.0f} us")
            from tinyqmoe.tiling.ir import var_ranges
            from tinyqmoe.tiling.select import candidates
            ranges = var_ranges(nest, kernel.sizes["LARGE"])
            n_cand = 1
            for v in nest.band:
                n_cand *= len(candidates(ranges[v][1] - ranges[v][0] + 1))
            leg = median_time(lambda: check_band(nest), 5)
            print(f"| {nest.name} | {cells[0]} | {cells[1]} | {n_cand} | {leg * 1e3:.1f} ms |")
    print(f"worst selection median: {worst * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
