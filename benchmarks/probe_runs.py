"""Repeatability of the cache probe: N full probes back to back, estimates vs the OS.

    .venv/bin/python benchmarks/probe_runs.py [--runs 3] [--plot docs/img/probe.png]
        [--out benchmarks/results/probe_runs.jsonl]

Prints one markdown row per run (L1/L2/L3 estimates, ratios to sysfs, seconds) and the
spread of each level across runs (max/min), the "runs agree within 25%" check. The plot
is of the last run. Nothing is written to hw.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tinyqmoe.hw.plot import human, plot_probe  # noqa: E402
from tinyqmoe.hw.probe import FULL, run_probe  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--out", default="benchmarks/results/probe_runs.jsonl")
    args = ap.parse_args()
    results = [run_probe(FULL, progress=False) for _ in range(args.runs)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        for r in results:
            f.write(json.dumps(r.to_dict()) + "\n")
    os_sizes = results[0].os_sizes
    print("| run | L1 | L1/OS | L2 | L2/OS | L3 | huge pages | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        def ratio(est, lvl):
            return f"{est / os_sizes[lvl]:.2f}" if est and os_sizes.get(lvl) else "-"
        print(f"| {i} | {human(r.l1) if r.l1 else '-'} | {ratio(r.l1, 'L1')} | "
              f"{human(r.l2) if r.l2 else '-'} | {ratio(r.l2, 'L2')} | "
              f"{human(r.l3) if r.l3 else '-'} | {human(r.huge_page_bytes)} | {r.seconds:.1f} |")
    for lvl in ("l1", "l2", "l3"):
        vals = [getattr(r, lvl) for r in results if getattr(r, lvl)]
        spread = f"{max(vals) / min(vals):.2f}" if len(vals) == len(results) else "missing in some runs"
        print(f"{lvl.upper()} spread (max/min over {len(results)} runs): {spread}")
    print(f"OS (sysfs): {', '.join(f'{k} {human(v)}' for k, v in os_sizes.items())}; "
          f"THP {results[0].thp_mode}")
    if args.plot:
        plot_probe(results[-1], args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
