"""tinyqmoe serve: an OpenAI-compatible HTTP server (chat and text completions, streaming)."""
import sys

from tinyqmoe.cli.common import add_model_options


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server with batched decoding (needs tinyqmoe[server])")
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--parallel", type=int, default=4, help="sequences decoded together (default 4)")
    p.add_argument("--queue", type=int, default=64,
                   help="requests that may wait for a free sequence slot; more get 503 (default 64)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 endpoints")
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyqmoe.errors import UsageError

    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn", "sse_starlette")):
        raise UsageError("the server needs its optional dependencies: pip install 'tinyqmoe[server]'")
    if args.parallel < 1:
        raise UsageError("--parallel must be >= 1")
    if args.queue < 0:
        raise UsageError("--queue must be >= 0")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be in 0..65535")

    import tinyqmoe
    from tinyqmoe.serve.app import create_app, model_ids
    from tinyqmoe.serve.server import run as run_server

    per_sequence = args.context
    if args.max_memory is not None:
        # the budget holds the KV caches of --parallel sequences of this many positions
        per_sequence = per_sequence or 1024
    from tinyqmoe.cli.common import cache_types, check_model_options, threads_arg

    check_model_options(args)
    model = tinyqmoe.load(args.model, weights=args.weights, threads=threads_arg(args.threads), group=args.group,
                          progress=sys.stderr.isatty(), max_memory=args.max_memory, source=args.source,
                          cold=args.cold, cache=not args.no_cache, context=per_sequence, sequences=args.parallel,
                          **cache_types(args))
    keep = 0 if args.max_memory is not None else None   # under a budget, no caches beyond the running ones
    app = create_app(model, parallel=args.parallel, queue=args.queue, api_key=args.api_key, keep_caches=keep)
    print(f"tinyqmoe: serving {model_ids(model)[0]} at http://{args.host}:{args.port}/v1 ({model.weights_kind} "
          f"{model.source}, {model.threads} threads, {args.parallel} parallel sequences of up to "
          f"{model.max_context} tokens); Ctrl-C stops", file=sys.stderr)
    try:
        run_server(app, args.host, args.port)
    finally:
        model.close()
    return 0
