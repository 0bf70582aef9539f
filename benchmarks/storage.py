"""When compression pays: generation speed of the fused source from raw / entropy-coded / LZW containers
over emulated storage of several speeds, side by side in one run.

    python benchmarks/storage.py raw=smol-raw.tqm rans=smol-rans.tqm lzw=smol-lzw.tqm \
        [--bw 90MB/s,300MB/s,none] [--gen-tokens 8] [--threads 2] [--json out.json] [--plot out.png]
    python benchmarks/storage.py --from-json out.json --plot out.png     # the plot of a saved run

Storage is emulated as a warm page cache plus a byte-rate throttle on every read (tinyqmoe.load(...,
storage_bw=...)): a chunk read of n bytes completes n / bw after the device is free, while decoding
and multiplying overlap the transfer. "none" is the warm page cache at memory speed. The real disk's
sequential read speed (cold, page cache dropped for the file) is printed beside the table.
Each cell runs in a fresh process (weights of one run never warm another's caches beyond the page
cache, which every cell shares); the rows alternate so drift hits every codec alike.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CELL = """
import sys, time, json, tinyqmoe
path, bw, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = tinyqmoe.load(path, source="fused", threads=threads, storage_bw=None if bw == "none" else bw)
m.tokenizer.stop_ids = frozenset()
ids = m.tokenizer.encode("The capital of France is")
list(m.stream_ids(ids, max_new_tokens=2))            # warm-up: kernels loaded, pages cached
list(m.stream_ids(ids, max_new_tokens=n))
s = m.last_stats
print(json.dumps({"gen_tps": s.gen_tps, "file_bytes": sum(m.weights.reader.tensor(x).stored_bytes
      for x in m.weights.reader.names)}))
"""


def disk_read_mbs(path: str) -> float:
    """Sequential read speed of `path` with its pages dropped first (MB/s, decimal)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        size, t0, off = os.fstat(fd).st_size, time.perf_counter(), 0
        while off < size:
            off += len(os.pread(fd, 8 << 20, off)) or size
        return size / (time.perf_counter() - t0) / 1e6
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("containers", nargs="*", help="LABEL=path.tqm")
    ap.add_argument("--bw", default="90MB/s,300MB/s,none")
    ap.add_argument("--gen-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="write tok/s per storage speed as a PNG (needs matplotlib)")
    ap.add_argument("--from-json", default=None, help="plot a saved --json run instead of running")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            saved = json.load(f)
        plot(saved, a.plot or "storage.png")
        return 0
    files = dict(c.split("=", 1) for c in a.containers)
    bws = a.bw.split(",")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    results: dict[str, dict[str, list[float]]] = {lab: {bw: [] for bw in bws} for lab in files}
    sizes = {}
    for _ in range(a.rounds):
        for bw in bws:
            for lab, path in files.items():
                r = subprocess.run([sys.executable, "-c", CELL, path, bw, str(a.gen_tokens), str(a.threads)],
                                   capture_output=True, text=True, timeout=3600)
                if r.returncode:
                    print(r.stderr, file=sys.stderr)
                    return 1
                out = json.loads(r.stdout.strip().splitlines()[-1])
                results[lab][bw].append(out["gen_tps"])
                sizes[lab] = out["file_bytes"]
                print(f"  {lab} @ {bw}: {out['gen_tps']:.3f} tok/s", file=sys.stderr, flush=True)
    disk = disk_read_mbs(next(iter(files.values())))
    best = lambda xs: max(xs)  # noqa: E731  the least disturbed run of a noisy machine
    base = next(iter(files))
    print(f"\nCPU: {cpu}; {a.threads} threads; fused source; {a.gen_tokens} tokens per cell; real disk "
          f"(this VM, cold sequential read) {disk:.0f} MB/s\n")
    print("| container | weights read per token | " + " | ".join(f"tok/s @ {bw}" for bw in bws) + " |")
    print("|---|---:|" + "---:|" * len(bws))
    for lab in files:
        cells = []
        for bw in bws:
            v = best(results[lab][bw])
            ratio = v / best(results[base][bw])
            cells.append(f"{v:.3f}" + ("" if lab == base else f" ({ratio:.2f}x {base})"))
        print(f"| {lab} | {sizes[lab] / 1e6:.1f} MB | " + " | ".join(cells) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": cpu, "threads": a.threads, "disk_mbs": disk, "sizes": sizes, "tok_s": results}, f,
                      indent=1)
    if a.plot:
        plot({"cpu": cpu, "threads": a.threads, "disk_mbs": disk, "sizes": sizes, "tok_s": results}, a.plot)
    return 0


def plot(run: dict, path: str) -> None:
    """Grouped bars: tok/s of each container at each storage speed, relative to the first container."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(run["tok_s"])
    bws = list(run["tok_s"][labels[0]])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(labels)
    for k, lab in enumerate(labels):
        rel = [max(run["tok_s"][lab][bw]) / max(run["tok_s"][labels[0]][bw]) for bw in bws]
        bars = ax.bar([i + k * width for i in range(len(bws))], rel, width,
                      label=f"{lab} ({run['sizes'][lab] / 1e6:.0f} MB/token)")
        for b, bw in zip(bars, bws):
            ax.annotate(f"{max(run['tok_s'][lab][bw]):.2f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=6)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(bws))],
                  [("warm page cache" if bw == "none" else f"storage {bw}") for bw in bws])
    ax.set_ylabel(f"tok/s relative to {labels[0]} (labels: tok/s)")
    ax.set_title(f"Fused source over emulated storage; {run['cpu']}, {run['threads']} threads", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    sys.exit(main())
