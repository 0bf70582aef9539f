"""Time of one decode step of the default model at several positions (what attention adds per position).

    .venv/bin/python benchmarks/decode_position.py [--threads 2] [--positions 16,128,256,512] [--rounds 3]

Resident int8, the fused path (kernels/layer.py): a prompt of P tokens, then single-token steps kept at
position P (the cache position is rewound after each step), milliseconds per step, each round in turn.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--positions", default="16,128,256,512")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=48)
    a = ap.parse_args()
    import tinyqmoe
    from tinyqmoe.hw.sysinfo import cpu_model

    m = tinyqmoe.load("default", threads=a.threads)
    m.decode_path = "fused"
    fused = m._fused
    positions = [int(p) for p in a.positions.split(",")]

    def step_ms(pos: int) -> float:
        st = m.new_state(max(positions) + 1)
        ids = [5 + i % 1000 for i in range(pos)]
        for s in range(0, pos, 16):
            fused.run([st], [ids[s:s + 16]], False)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            fused.run([st], [[7]], False, copy=False)
            st.pos -= 1
        return (time.perf_counter() - t0) / a.steps * 1e3

    print(f"{cpu_model()}, {a.threads} threads: ms per decode step at each position")
    for _ in range(a.rounds):
        print("  ".join(f"pos {p}: {step_ms(p):.2f}" for p in positions), flush=True)


if __name__ == "__main__":
    main()
