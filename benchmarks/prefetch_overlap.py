"""How much does decoding layer i+1 on a background thread (while layer i computes) buy the streamed source?

    .venv/bin/python benchmarks/prefetch_overlap.py MODEL.tqm [--rounds 3] [--gen-tokens 8] [--threads 2]

Loads the container once with the streamed source and alternates prefetch on / off between rounds
(same process, same weights), printing generation tok/s for each and their ratio (medians).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import tinyqmoe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gen-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    m = tinyqmoe.load(a.model, source="streamed", threads=a.threads, context=64)
    m.tokenizer.stop_ids = frozenset()
    ids = m.tokenizer.encode("The capital of France is")
    tps = {True: [], False: []}
    for _ in range(a.rounds):
        for on in (True, False):
            m.weights.prefetch = on
            list(m.stream_ids(ids, max_new_tokens=a.gen_tokens))
            tps[on].append(m.last_stats.gen_tps)
    on, off = statistics.median(tps[True]), statistics.median(tps[False])
    print(f"{a.model}: streamed, prefetch on {on:.2f} tok/s, off {off:.2f} tok/s, ratio {on / off:.2f}x "
          f"(medians of {a.rounds}; runs on {[round(x, 2) for x in tps[True]]}, off {[round(x, 2) for x in tps[False]]})")
    m.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
