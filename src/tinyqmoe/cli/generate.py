"""tinyqmoe generate: stream a completion to stdout; why it stopped and the speeds to stderr."""
import sys

from tinyqmoe.cli.common import (add_model_options, add_sampling_options, info, load_model, log_seed,
                                 sampling_kwargs)


def register(sub) -> None:
    p = sub.add_parser("generate", help="complete a prompt (tokens stream to stdout)",
                       description="Complete a prompt. The text goes to stdout; a [stopped: ...] line (when the "
                                   "output was cut by -n, a full context or a stop string) and the statistics "
                                   "go to stderr. Option values: docs/conventions.md.")
    add_model_options(p)
    p.add_argument("-p", "--prompt", default=None, help="prompt text ('-' reads standard input)")
    p.add_argument("-f", "--file", default=None, metavar="PATH", help="read the prompt from a file (UTF-8)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    add_sampling_options(p)
    p.set_defaults(func=run)


def read_prompt(args) -> str:
    from tinyqmoe.errors import UsageError

    if (args.prompt is None) == (args.file is None):
        raise UsageError("give the prompt once: -p TEXT (or -p - for standard input) or -f FILE")
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the prompt: {exc.strerror if isinstance(exc, OSError) else exc}",
                             args.file) from None
    return sys.stdin.read() if args.prompt == "-" else args.prompt


def run(args) -> int:
    from tinyqmoe.bench import peak_rss_mb

    prompt = read_prompt(args)
    kwargs = sampling_kwargs(args)
    model = load_model(args)
    out = sys.stdout
    pieces = model.stream(prompt, chat=args.chat, **kwargs)  # checked here: an error prints nothing
    if not args.chat:
        out.write(prompt)
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    s = model.last_stats
    log_seed(args, s)
    stop = s.describe_stop()
    if stop:
        print(stop, file=sys.stderr)
    info(args, f"[prompt {s.prompt_tokens} tok, {s.prompt_tps:.1f} tok/s | generated {s.generated} tok, "
               f"{s.gen_tps:.1f} tok/s | load {model.load_seconds:.2f} s | {model.weights_kind} {model.source}, "
               f"{model.threads} threads | peak RSS {peak_rss_mb():.0f} MB]")
    return 0
