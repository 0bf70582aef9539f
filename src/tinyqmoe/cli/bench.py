"""tinyqmoe bench: prompt and generation speed, load time and peak memory of one model."""
import json
import sys

from tinyqmoe.cli.common import add_model_options, load_model


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure prompt/gen tok/s, load time, peak RSS",
                       description="Prompt and generation speed (medians; end-of-sequence ignored, as "
                                   "llama-bench does), load time, weights read per token, peak RSS in MB.")
    add_model_options(p)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timed runs (the median is reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyqmoe.bench import run_bench
    from tinyqmoe.errors import UsageError

    from tinyqmoe.cli.common import check_model_options

    check_model_options(args)
    if args.prompt_tokens < 1 or args.gen_tokens < 2 or args.repeats < 1:
        raise UsageError("--prompt-tokens >= 1, --gen-tokens >= 2 and --repeats >= 1 are required")
    r = run_bench(load_model(args), args.prompt_tokens, args.gen_tokens, args.repeats)
    if args.json:
        print(json.dumps(r.to_dict()))
        return 0
    rows = [("model", r.model), ("weights", f"{r.weights}, {r.threads} threads"),
            ("load", f"{r.load_s:.2f} s"), ("prompt", f"{r.prompt_tps:.1f} tok/s ({r.prompt_tokens} tokens)"),
            ("generation", f"{r.gen_tps:.1f} tok/s ({r.gen_tokens} tokens)"),
            ("weights read / token", f"{r.weight_bytes / 1e6:.1f} MB -> {r.gen_gbps:.2f} GB/s"),
            ("peak RSS", f"{r.peak_rss_mb:.0f} MB")]
    if r.source != "resident":
        rows += [("source", f"{r.source}{' (cold: pages dropped after each read)' if r.cold else ''}"),
                 ("storage read / token", f"{r.storage_read_per_token / 1e6:.1f} MB"),
                 ("decode share", f"{100 * r.decode_share:.0f}% of wall time (summed over threads)")]
    for k, v in rows:
        print(f"{k:>22}: {v}", file=sys.stdout)
    return 0
