"""Repeatability of the cache probe: N full probes back to back, estimates vs the OS.

    .venv/bin/python benchmarks/probe_runs.py [--runs 3] [--plot docs/img/probe.png]
        [--out benchmarks/results/probe_runs.jsonl]
    .venv/bin/python benchmarks/probe_runs.py --reanalyze benchmarks/results/probe_*.jsonl

--reanalyze measures nothing: it finds the knees of stored curves again with the current detector,
so detectors can be compared on the same measurements.

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

from tinyqmoe.hw.plot import plot_probe  # noqa: E402
from tinyqmoe.units import format_binary as human  # noqa: E402
from tinyqmoe.hw.probe import FULL, run_probe  # noqa: E402


def reanalyzed(d: dict):
    """A stored ProbeResult with its knees and levels found again by the current detector."""
    from tinyqmoe.hw.knees import detect_knees
    from tinyqmoe.hw.probe import ProbeResult, level_estimates

    r = ProbeResult.from_dict(d)
    k_tri, k_chase = detect_knees(r.sizes, r.triangular_ns), detect_knees(r.sizes, r.chase_ns)
    r.l1, r.l2, r.l3 = (level_estimates(k_tri, k_chase) + [None, None, None])[:3]
    return r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--out", default="benchmarks/results/probe_runs.jsonl")
    ap.add_argument("--reanalyze", nargs="+", metavar="JSONL", help="stored curves to find the knees of again")
    args = ap.parse_args()
    if args.reanalyze:
        results = [reanalyzed(json.loads(line)) for path in args.reanalyze for line in open(path) if line.strip()]
    else:
        results = [run_probe(FULL, progress=False) for _ in range(args.runs)]
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            for r in results:
                f.write(json.dumps(r.to_dict()) + "\n")
    os_sizes = results[0].os_sizes
    print(f"# {results[0].cpu_model}; the machine may be shared: figures move with other tenants' load")
    print("| run | L1 | L1/OS | L2 | L2/OS | L3 | huge pages | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        def ratio(est, lvl):
            os_size = r.os_sizes.get(lvl)
            return f"{est / os_size:.2f}" if est and os_size else "-"
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
