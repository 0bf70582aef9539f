"""Generation speed of the fused source from several containers against the same model resident,
side by side in one process, rounds alternating (the issue-11 targets are these ratios).

    python benchmarks/fused_sources.py RESIDENT.tqm raw=a.tqm tans=b.tqm lzw=c.tqm [--rounds 3] [--tokens 16]

Prints gen tok/s per round and the best round's ratio to resident; names the CPU.
"""
from __future__ import annotations

import argparse
import sys

import tinyqmoe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("resident", help="a container run resident (e.g. the int8 cache of the default model)")
    ap.add_argument("fused", nargs="+", help="LABEL=path.tqm, run with the fused source")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    models = {"resident": tinyqmoe.load(a.resident, source="resident", threads=a.threads)}
    for item in a.fused:
        label, path = item.split("=", 1)
        models[label] = tinyqmoe.load(path, source="fused", threads=a.threads)
    for m in models.values():
        m.tokenizer.stop_ids = frozenset()
    ids = models["resident"].tokenizer.encode("The capital of France is")
    tps = {k: [] for k in models}
    for _ in range(a.rounds):
        for label, m in models.items():
            list(m.stream_ids(ids, max_new_tokens=a.tokens))
            tps[label].append(m.last_stats.gen_tps)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; {a.threads} threads; {a.tokens} tokens per round; best of {a.rounds}\n")
    print("| source | gen tok/s per round | best | vs resident |\n|---|---|---:|---:|")
    base = max(tps["resident"])
    for label, xs in tps.items():
        print(f"| {label} | {' / '.join(f'{x:.1f}' for x in xs)} | {max(xs):.1f} | {max(xs) / base:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
