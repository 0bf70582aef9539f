"""`tinyqmoe eval`: accuracy and latency on MMLU / ARC-Easy / ARC-Challenge (see docs/eval.md).

  tinyqmoe eval MODEL --tasks mmlu,arc_easy,arc_challenge [--split test --limit N --shots K ...]
  tinyqmoe eval --compare Original=default:f32 8-bit=default:int8 Compressed=smol.tqm --tasks arc_easy
"""
from __future__ import annotations

import argparse
import sys

from tinyqmoe.cli.common import add_model_argument, add_progress_option, add_threads_option

VARIANT_HELP = "[LABEL=]MODEL[:f32|int8], e.g. Original=default:f32 8-bit=default:int8 Compressed=smol.tqm"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="accuracy + latency on MMLU / ARC (log-likelihood, lm-eval prompts)",
        description="Score multiple-choice questions by log-likelihood with lm-evaluation-harness "
                    "prompts. Per-question results go to a jsonl in --output as they finish, so an "
                    "interrupted run continues where it stopped. See docs/eval.md.")
    add_model_argument(p, help="model path or name (default, ORG/NAME[:QUANT]), optionally MODEL:f32|int8",
                       required=False)
    p.add_argument("--compare", nargs="+", metavar="VARIANT",
                   help=f"evaluate several variants on the same questions; {VARIANT_HELP}")
    p.add_argument("--tasks", default="mmlu,arc_easy,arc_challenge",
                   help="comma-separated lm-eval names: mmlu (group), mmlu_stem|humanities|social_sciences|"
                   "other, mmlu_<subject>, arc_easy, arc_challenge (default: mmlu,arc_easy,arc_challenge)")
    p.add_argument("--split", default="test", choices=("test", "validation"))
    p.add_argument("--limit", help="lm-eval's --limit: the first N documents of each task, or a fraction "
                   "(0.1) of each; TASK=N,... per task; for a group it applies to each of its subjects")
    p.add_argument("--sample", help="a deterministic sample of N questions stratified over a group's "
                   "subjects (e.g. mmlu=150); N alone: for every task asked for")
    p.add_argument("--max-rows", type=int, help="new context tokens per forward; default 1: one question per forward (see docs/eval.md)")
    p.add_argument("--shots", type=int, help="few-shot examples (default: 5 for MMLU, 0 for ARC)")
    p.add_argument("--weights", choices=("f32", "int8"), help="weights to run MODEL with")
    p.add_argument("--prefill-path", choices=("f32", "int8"),
                   help="how int8 linears multiply the prompts: int8 activations (the engine's default) or "
                        "f32 (weight-only quantization, what Table 1 compares); default: a resumed run's "
                        "own, else the engine's")
    add_threads_option(p, "engine threads")
    p.add_argument("--max-memory", metavar="SIZE", help="peak-RSS budget of each model run (e.g. 300MB), "
                                                        "passed to tinyqmoe.load")
    p.add_argument("--output", help="directory for samples_<task>.jsonl, run.json, results_<time>.json/.md "
                   "(default eval-out/<model>-<weights>, or eval-out/compare)")
    p.add_argument("--variants-dir", help="with --compare: where each variant's samples live "
                   "(<dir>/<LABEL>/, default --output), so tables over other limits reuse them")
    p.add_argument("--bos", action=argparse.BooleanOptionalAction, default=None,
                   help="prepend BOS to contexts (default: the tokenizer's add_bos convention)")
    p.add_argument("--workers", type=int, help="shard over N Ray actors on a local Ray cluster "
                   "(pip install 'tinyqmoe[distributed]')")
    p.add_argument("--ray", metavar="ADDRESS", help="join an existing Ray cluster instead")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyqmoe.errors import UsageError
    from tinyqmoe.eval.batched import MAX_ROWS
    from tinyqmoe.eval.runner import parse_limit
    from tinyqmoe.eval.spec import ModelSpec

    from tinyqmoe.cli.common import show_progress, threads_arg

    if args.shots is not None and args.shots < 0:
        raise UsageError(f"--shots {args.shots}: expected 0 or more few-shot examples")
    if args.max_memory is not None:
        from tinyqmoe.units import parse_size
        parse_size(args.max_memory, "--max-memory")
    options = {"threads": threads_arg(args.threads), "max_memory": args.max_memory}
    common = dict(split=args.split, limit=parse_limit(args.limit), shots=args.shots, progress=show_progress(args),
                  workers=args.workers, ray_address=args.ray,
                  sample=parse_limit(args.sample, "--sample", fractions=False), max_rows=args.max_rows or MAX_ROWS,
                  prefill=args.prefill_path)
    if args.compare:
        if args.model:
            raise UsageError("give either MODEL or --compare VARIANT..., not both")
        from tinyqmoe.eval.compare import compare, compare_markdown
        specs = [ModelSpec.parse(v, **options) for v in args.compare]
        table = compare(specs, args.tasks, output=args.output or "eval-out/compare",
                        variants_dir=args.variants_dir, **common)
        sys.stdout.write(compare_markdown(table))
        return 0
    if not args.model:
        raise UsageError(f"name a MODEL to evaluate, or --compare {VARIANT_HELP}")
    from tinyqmoe.eval.report import markdown_table
    from tinyqmoe.eval.runner import evaluate
    spec = ModelSpec.parse(args.model, **options)
    if args.weights:
        spec = ModelSpec(spec.source, args.weights, spec.label, spec.threads, spec.max_memory)
    distributed = args.workers is not None or args.ray is not None
    results = evaluate(spec if distributed else spec.load(), args.tasks, output=args.output,
                       add_bos=args.bos, **common)
    sys.stdout.write(markdown_table(results))
    return 0
