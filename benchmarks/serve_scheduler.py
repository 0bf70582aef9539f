"""The serving scheduler alone (no HTTP): where the time of N concurrent requests goes.

    .venv/bin/python benchmarks/serve_scheduler.py [MODEL] [--threads 2] [--requests 8] [--rounds 2]

N requests of 64 different prompt tokens (README words) and 128 generated tokens each (greedy,
`ignore_eos`) are submitted at once to a `serve.scheduler.Scheduler` in this process (no kept caches),
then one request alone; rounds alternate. For each run: the wall time, the time of the steps that
carry prompt work (a long chunk alone and tails in the fused call), and of the decode-only steps (their
count and median). What issue 13's (a) ratio is made of before the HTTP side adds to it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(model, prompts: list[list[int]], new_tokens: int) -> dict:
    from tinyqmoe.model.sampling import SamplingParams
    from tinyqmoe.serve.scheduler import Job, Scheduler

    sched = Scheduler(model, parallel=len(prompts), keep_caches=0)
    steps = []                      # (carried prompt work, seconds)
    step = sched._step

    def timed_step():
        prompt_work = any(s.prefilling for s in sched._active)
        t = time.perf_counter()
        step()
        steps.append((prompt_work, time.perf_counter() - t))
    sched._step = timed_step
    left = threading.Semaphore(0)
    t0 = time.perf_counter()
    for p in prompts:
        sched.submit(Job(p, new_tokens, SamplingParams(temperature=0),
                         lambda e: left.release() if e[0] in ("done", "error") else None, ignore_eos=True))
    for _ in prompts:
        left.acquire()
    wall = time.perf_counter() - t0
    sched.close()
    decode = [s for p, s in steps if not p]
    return {"wall": wall, "tok/s": len(prompts) * new_tokens / wall,
            "prompt steps": sum(p for p, _ in steps), "prompt s": sum(s for p, s in steps if p),
            "decode steps": len(decode), "decode s": sum(decode),
            "decode median ms": 1e3 * statistics.median(decode)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    import tinyqmoe
    from tinyqmoe.hw.sysinfo import cpu_model

    model = tinyqmoe.load(a.model, threads=a.threads)
    words = (ROOT / "README.md").read_text().split()
    prompts = [model.tokenizer.encode(" ".join(words[i * 50:i * 50 + 60]))[:64] for i in range(a.requests)]
    run(model, prompts[:1], 4)      # compile and warm
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; {a.threads} threads; model {a.model}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| requests | wall s | tok/s | steps with prompt work | their s | decode steps | their s | median ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _ in range(a.rounds):
        for n in (a.requests, 1):
            r = run(model, prompts[:n], a.tokens)
            print(f"| {n} | {r['wall']:.2f} | {r['tok/s']:.1f} | {r['prompt steps']} | {r['prompt s']:.2f} "
                  f"| {r['decode steps']} | {r['decode s']:.2f} | {r['decode median ms']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
