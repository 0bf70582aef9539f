"""Cost of an MMLU 5-shot question: today's one-question scorer vs the batched scorer with the
subject's prefix forked, side by side in one process, against `tinyqmoe bench`'s prompt rate.

    .venv/bin/python benchmarks/eval_prefix.py --weights int8 --subjects 2 --questions 8

For each scorer: seconds per question, tokens of prefill per question (the prefix counted once
per subject, in the first question's share), the cost in "bench tokens" (seconds per question x the
bench's prompt tokens/s, measured alternately in the same run), and the largest |difference| in
log-likelihood from today's scorer. Writes benchmarks/results/eval_prefix_<weights>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import tinyqmoe
from tinyqmoe.bench import run_bench
from tinyqmoe.eval.batched import BatchScorer
from tinyqmoe.eval.local import Job, LocalScorer
from tinyqmoe.eval.tasks import LEAVES, leaves_of


def questions(n_subjects: int, per_subject: int):
    subjects = leaves_of("mmlu")[::max(1, 57 // n_subjects)][:n_subjects]
    return [Job(s, 5, list(enumerate(LEAVES[s].docs("test")[:per_subject]))) for s in subjects]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="int8")
    ap.add_argument("--subjects", type=int, default=2)
    ap.add_argument("--questions", type=int, default=8, help="per subject")
    ap.add_argument("--rows", default="1,512", help="max_rows settings of the batched scorer")
    ap.add_argument("--paths", default="stream,auto", help="engine paths to time (eval uses stream)")
    args = ap.parse_args()
    model = tinyqmoe.load("default", weights=args.weights)
    jobs = questions(args.subjects, args.questions)
    local = LocalScorer(model)
    reqs = [r for job in jobs for r, *_ in local.requests(job, None)]
    n = len(reqs)
    model.loglikelihood_ids(reqs[0].ctx[:32], reqs[0].conts)  # compile / warm up

    bench_rates = []

    def bench():
        bench_rates.append(run_bench(model, prompt_tokens=128, gen_tokens=8, repeats=1).prompt_tps)

    bench()
    t0 = time.perf_counter()
    today = [model.loglikelihood_ids(r.ctx, r.conts) for r in reqs]
    rows = {"today (one question, full context)": {
        "seconds_per_question": (time.perf_counter() - t0) / n,
        "prefill_tokens_per_question": sum(len(r.ctx) for r in reqs) / n, "max_abs_dloglik": 0.0}}
    settings = [(p, int(r)) for p in args.paths.split(",") for r in args.rows.split(",")]
    for path, max_rows in settings:
        bench()
        scorer = BatchScorer(model, path=path, max_rows=max_rows)
        t0 = time.perf_counter()
        got = dict(scorer.score(reqs))
        seconds = (time.perf_counter() - t0) / n
        diff = max(abs(a[0] - b[0]) for i in range(n) for a, b in zip(got[i].results, today[i]))
        rows[f"prefix fork, path={path}, max_rows={max_rows}"] = {
            "seconds_per_question": seconds,
            "prefill_tokens_per_question": sum(s.prefill_tokens for s in got.values()) / n,
            "max_abs_dloglik": diff}
    bench()
    rate = sum(bench_rates) / len(bench_rates)
    for r in rows.values():
        r["bench_tokens_per_question"] = r["seconds_per_question"] * rate
    out = {"weights": args.weights, "questions": n, "subjects": [j.task for j in jobs],
           "bench_prompt_tps": bench_rates, "machine": platform.processor() or platform.machine(), "rows": rows}
    print(f"bench prompt rate {rate:.0f} tok/s (runs: {', '.join(f'{x:.0f}' for x in bench_rates)}); "
          f"{n} MMLU 5-shot questions, {args.weights}")
    print("| scorer | s/question | prefill tokens/question | bench tokens/question | max abs dloglik |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds_per_question']:.3f} | {r['prefill_tokens_per_question']:.0f} "
              f"| {r['bench_tokens_per_question']:.0f} | {r['max_abs_dloglik']:.1e} |")
    path = Path(__file__).parent / "results" / f"eval_prefix_{args.weights}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
