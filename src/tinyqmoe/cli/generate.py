"""tinyqmoe generate: stream a completion to stdout, speeds to stderr."""
import sys

from tinyqmoe.cli.common import add_model_options, add_sampling_options, load_model, sampling_kwargs


def register(sub) -> None:
    p = sub.add_parser("generate", help="complete a prompt (tokens stream to stdout)")
    add_model_options(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text ('-' reads standard input)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    add_sampling_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyqmoe.bench import peak_rss_mb

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    kwargs = sampling_kwargs(args)
    model = load_model(args)
    out = sys.stdout
    if not args.chat:
        out.write(prompt)
    for piece in model.stream(prompt, chat=args.chat, **kwargs):
        out.write(piece)
        out.flush()
    out.write("\n")
    s = model.last_stats
    print(f"[prompt {s.prompt_tokens} tok, {s.prompt_tps:.1f} tok/s | generated {s.generated} tok, "
          f"{s.gen_tps:.1f} tok/s | load {model.load_seconds:.2f} s | {model.weights_kind} {model.source}, "
          f"{model.threads} threads | peak RSS {peak_rss_mb():.0f} MiB]",
          file=sys.stderr)
    return 0
