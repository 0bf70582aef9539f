"""Does the probe's L2 figure pick good engine block sizes? Side by side, interleaved, one process.

    .venv/bin/python benchmarks/engine_tuning.py [--prompt-tokens 128] [--rounds 5] [--threads 2]
        [--containers a.tqm,b.tqm,...]

Prefill: the default model (int8) with the prefill block size (bytes of dequantized f32 weight rows per
BLAS call) set to several values, among them half the L2 that `tinyqmoe probe` measured (what the engine
uses when hw.json holds a probe); rounds interleave the settings so drift hits all alike. Decode: for
each container given (e.g. the default model compressed with different --chunk-size), generation tok/s
with the fused source. Prints a markdown table; medians over rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import tinyqmoe
from tinyqmoe.bench import prompt_ids
from tinyqmoe.runtime import stored_l2_bytes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--containers", default="")
    ap.add_argument("--gen-tokens", type=int, default=16)
    a = ap.parse_args()
    l2 = stored_l2_bytes()
    print(f"measured L2 (hw.json): {l2 and l2 // 1024} KiB")
    model = tinyqmoe.load("default", threads=a.threads)
    ids = prompt_ids(model.tokenizer, a.prompt_tokens)
    settings = {"64 KiB": 64 << 10, "256 KiB": 256 << 10, "L2/2 (probe)": (l2 or 2 << 20) // 2,
                "4 MiB": 4 << 20, "whole matrix": 1 << 40}
    times = {k: [] for k in settings}
    from tinyqmoe.model.generate import prefill

    for _ in range(a.rounds):
        for name, b in settings.items():
            st = model.new_state(len(ids))
            import time
            t0 = time.perf_counter()
            model.runtime.block_bytes = b
            prefill(model._forward, st, ids)
            times[name].append(a.prompt_tokens / (time.perf_counter() - t0))
    print(f"\n| prefill block | bytes | prompt tok/s ({a.prompt_tokens} tokens, median of {a.rounds}) |")
    print("|---|---:|---:|")
    for name, b in settings.items():
        print(f"| {name} | {min(b, 1 << 40) if b < 1 << 40 else 'all'} | {statistics.median(times[name]):.0f} |")
    paths = [p for p in a.containers.split(",") if p]
    if paths:
        models = {p: tinyqmoe.load(p, source="fused", threads=a.threads) for p in paths}
        gen = {p: [] for p in paths}
        for m in models.values():
            m.tokenizer.stop_ids = frozenset()
        for _ in range(a.rounds):
            for p, m in models.items():
                list(m.stream_ids(ids[:8], max_new_tokens=a.gen_tokens))
                gen[p].append(m.last_stats.gen_tps)
        print(f"\n| container (fused source) | chunks | gen tok/s (median of {a.rounds}) |")
        print("|---|---:|---:|")
        for p, m in models.items():
            c = m.weights.reader
            n = sum(c.tensor(x).n_chunks for x in c.names)
            print(f"| {p} | {n} | {statistics.median(gen[p]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
