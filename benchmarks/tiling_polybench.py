"""PolyBench evidence for latency-based tiling: untiled vs selected vs autotuned.

    .venv/bin/python benchmarks/tiling_polybench.py [--sizes MEDIUM LARGE] [--kernels ...]
        [--repeats 3] [--out benchmarks/results/tiling_polybench.jsonl]

For every kernel and dataset: select tiles from the cache sizes in hw.json (tinyqmoe.hw
.cache_sizes()), check tiled == untiled, search {32,128,512}^band exhaustively per nest,
then time untiled / selected / autotuned interleaved (medians of 15 runs for MEDIUM, 3
for LARGE). One JSON line per run is
appended to --out; a markdown table is printed at the end (the one in docs/tiling.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tinyqmoe.hw import cache_sizes  # noqa: E402
from tinyqmoe.tiling.evaluate import compare  # noqa: E402
from tinyqmoe.tiling.polybench import KERNELS  # noqa: E402


def table(rows: list[dict]) -> str:
    out = ["| kernel | size | selected tiles (order) | footprint | speedup vs untiled | "
           "interchange only | selected / autotuned speed | autotune time (configs) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tiles = "; ".join(f"{','.join(f'{v}={t}' for v, t in p['tiles'].items())} "
                          f"({''.join(p['order'])})" for p in r["plans"].values())
        fp = ", ".join(f"{p['footprint_bytes'] / 1024:.0f} KiB" for p in r["plans"].values())
        same = " (same tiles)" if all(r["autotune_plans"][k]["tiles"] == p["tiles"]
                                      for k, p in r["plans"].items()) else ""
        inter = r.get("speedup_interchange_only")
        inter = f"{inter:.2f}x" if inter else "-"
        out.append(f"| {r['kernel']} | {r['size']} | {tiles} | {fp} | {r['speedup']:.2f}x | "
                   f"{inter} | {r['vs_autotune']:.2f}{same} | {r['autotune_seconds']:.0f} s "
                   f"({r['autotune_configs']}) |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["MEDIUM", "LARGE"])
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS))
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs per version (default: 15 MEDIUM, 3 LARGE)")
    ap.add_argument("--out", default="benchmarks/results/tiling_polybench.jsonl")
    ap.add_argument("--no-autotune", action="store_true", help="skip the exhaustive search")
    ap.add_argument("--table-only", action="store_true",
                    help="print the table of the latest row per kernel and size in --out")
    args = ap.parse_args()
    if args.table_only:
        latest = {}
        for line in open(args.out):
            row = json.loads(line)
            latest[(row["size"], row["kernel"])] = row
        order = {n: i for i, n in enumerate(KERNELS)}
        keys = sorted(latest, key=lambda k: (k[0] != "MEDIUM", order[k[1]]))
        print(table([latest[k] for k in keys]))
        return 0
    cache = cache_sizes()
    print(f"cache sizes: {cache}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        for name in args.kernels:
            kernel = KERNELS[name]
            t0 = time.perf_counter()
            repeats = args.repeats or (15 if size == "MEDIUM" else 3)
            r = compare(kernel, kernel.sizes[size], cache, repeats=repeats,
                        do_autotune=not args.no_autotune, progress=True)
            row = r.to_dict() | {"size": size, "cache": cache.__dict__,
                                 "times": r.times, "wall_s": time.perf_counter() - t0,
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            rows.append(row)
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} {size}: speedup {r.speedup:.2f}x, selected/autotuned "
                  f"{r.vs_autotune:.2f}, selection {max(r.selection_seconds.values()) * 1e6:.0f}"
                  f" us, autotune {r.autotune_seconds:.0f} s", file=sys.stderr, flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
