"""Resident weights on huge pages (weights/arena.py) against the same rows in ordinary numpy arrays.

    .venv/bin/python benchmarks/huge_pages.py [--threads 2] [--rounds 6]

One process: the default model loaded (its rows and scales in the arena), and a second FusedDecode over
copies of the same rows made by numpy (each tensor its own allocation: 4 KB pages below 4 MiB, as
before the arena). Single-token decode steps, the two alternating in ABBA order; tok/s per round.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=96)
    a = ap.parse_args()
    import tinyqmoe
    import tinyqmoe.kernels.decode as decode
    from tinyqmoe.hw.sysinfo import cpu_model

    m = tinyqmoe.load("default", threads=a.threads)
    m.decode_path = "fused"
    arena = m._fused
    copies = {id(x): np.array(x, copy=True) for group in arena.linears[0::2] for x in group}
    head = m.weights.lm_head.rows_int
    copies[id(head)] = np.array(head, copy=True)
    plain = decode.FusedDecode(m.weights, m.config)
    plain.linears = tuple(tuple(copies[id(x)] for x in group) if i % 2 == 0 else group
                          for i, group in enumerate(arena.linears))
    rows = decode._rows

    def rate(fused, head_rows) -> float:
        decode._rows = (lambda linear: head_rows) if head_rows is not None else rows
        try:
            st = m.new_state(a.steps + 8)
            fused.run([st], [[1, 2, 3, 4]], False)
            t0 = time.perf_counter()
            for _ in range(a.steps):
                fused.run([st], [[5]], False, copy=False)
            return a.steps / (time.perf_counter() - t0)
        finally:
            decode._rows = rows

    huge = [l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")]
    print(f"{cpu_model()}, {a.threads} threads; {huge[0].strip() if huge else 'AnonHugePages: ?'}")
    ra, rb = [], []
    for r in range(a.rounds):
        order = [(ra, arena, None), (rb, plain, copies[id(head)])]
        for out, fused, h in (order if r % 2 == 0 else order[::-1]):
            out.append(rate(fused, h))
    print(f"arena {statistics.median(ra):.1f} tok/s, numpy arrays {statistics.median(rb):.1f} tok/s: "
          f"{statistics.median(ra) / statistics.median(rb):.3f}x; per round "
          + " ".join(f"{x / y:.3f}" for x, y in zip(ra, rb)))


if __name__ == "__main__":
    main()
