"""Weight sources, storage regimes and memory budgets, side by side, each run in its own process.

    .venv/bin/python benchmarks/streaming.py MODEL.tqm [--label smol-lzw] [--budgets 230MB,260MB,400MB]
        [--sources resident,streamed,fused] [--gen-tokens 16] [--prompt-tokens 16] [--threads 2]
        [--out benchmarks/results]

For each source (warm and cold storage) and each budget, runs `tinyqmoe bench MODEL --json` in a fresh
process and records generation tok/s, peak RSS (VmHWM), storage bytes read per token (/proc/self/io)
and the share of time spent decoding. Writes <out>/streaming-<label>.json and .md, and a PNG of tok/s
against the budget (the auto-selected source under each budget) under docs/img/.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(model: str, extra: list[str], a) -> dict | None:
    cmd = [sys.executable, "-m", "tinyqmoe", "bench", model, "--json", "--threads", str(a.threads),
           "--gen-tokens", str(a.gen_tokens), "--prompt-tokens", str(a.prompt_tokens), "--repeats", str(a.repeats),
           *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--label", default=None)
    ap.add_argument("--sources", default="resident,streamed,fused")
    ap.add_argument("--budgets", default="", help="comma-separated budgets for the auto-selected source")
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    label = a.label or Path(a.model).stem
    rows = []
    for source in a.sources.split(","):
        for cold in ((False,) if source == "resident" else (False, True)):
            extra = ["--source", source, "--context", str(a.context)] + (["--cold"] if cold else [])
            r = bench(a.model, extra, a)
            rows.append({"kind": "source", "source": source, "cold": cold, **r})
            print(json.dumps(rows[-1]), flush=True)
    for budget in filter(None, a.budgets.split(",")):
        r = bench(a.model, ["--max-memory", budget, "--context", str(a.context)], a)
        rows.append({"kind": "budget", "budget": budget, **r})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"streaming-{label}.json").write_text(json.dumps({"model": a.model, "args": vars(a), "rows": rows},
                                                            indent=1))
    md = ["| run | source | storage | gen tok/s | peak RSS MB | read from storage / token MB | decode share |",
          "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        run = r.get("budget", "") if r["kind"] == "budget" else "forced"
        if "error" in r:
            md.append(f"| {run} | {r.get('source', '')} | | failed: {r['error']} | | | |")
            continue
        md.append(f"| {run} | {r['source']} | {'cold' if r['cold'] else 'warm'} | {r['gen_tps']:.2f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['storage_read_per_token'] / 1e6:.1f} | {100 * r['decode_share']:.0f}% |")
    (out / f"streaming-{label}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    budgets = [r for r in rows if r["kind"] == "budget" and "error" not in r]
    if budgets:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from tinyqmoe.units import parse_size

        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = [parse_size(r["budget"]) / 1e6 for r in budgets]
        ax.plot(xs, [r["gen_tps"] for r in budgets], "o-")
        for x, r in zip(xs, budgets):
            ax.annotate(r["source"], (x, r["gen_tps"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("--max-memory (MB)")
        ax.set_ylabel("generation tok/s")
        ax.set_title(f"{label}: speed under a memory budget (warm storage)")
        ax.grid(alpha=0.3)
        img = ROOT / "docs" / "img"
        img.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(img / f"streaming-{label}.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
