"""Options shared by the verbs that run a model."""
from __future__ import annotations

import argparse
import sys


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="HF directory, .gguf or .tqm file, or the name 'default'")
    p.add_argument("--weights", choices=("int8", "f32"), default="int8",
                   help="weights for float checkpoints: int8 (default) or f32 (reference)")
    p.add_argument("--group", type=int, default=None,
                   help="int8 scale per group of this many inputs (default: one per output channel)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="peak-RSS budget, e.g. 300MB: picks the fastest weight source that fits")
    p.add_argument("--source", choices=("auto", "resident", "streamed", "fused"), default="auto",
                   help="where weights live while running (default: resident, or what fits --max-memory)")
    p.add_argument("--cold", action="store_true",
                   help="streamed/fused: drop the file's pages after each read (weights come from storage)")
    p.add_argument("--context", type=int, default=None,
                   help="longest prompt + generation to budget the KV cache for (default 1024 with --max-memory)")
    p.add_argument("--no-cache", action="store_true",
                   help="quantize float checkpoints in memory instead of caching their int8 weights")


def add_sampling_options(p: argparse.ArgumentParser, default_tokens: int = 128) -> None:
    p.add_argument("-n", "--max-new-tokens", type=int, default=default_tokens, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def sampling_kwargs(args) -> dict:
    from tinyqmoe.errors import UsageError

    if args.max_new_tokens < 0:
        raise UsageError("-n must be >= 0")
    if not 0.0 < args.top_p <= 1.0:
        raise UsageError("--top-p must be in (0, 1]")
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, seed=args.seed)


def load_model(args):
    import tinyqmoe

    if args.group is not None and args.group <= 0:
        from tinyqmoe.errors import UsageError
        raise UsageError("--group must be positive")
    return tinyqmoe.load(args.model, weights=args.weights, threads=args.threads, group=args.group,
                         progress=sys.stderr.isatty(), max_memory=args.max_memory, source=args.source,
                         cold=args.cold, context=args.context, cache=not args.no_cache)
