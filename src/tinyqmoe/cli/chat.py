"""tinyqmoe chat: an interactive conversation using the model's chat template.

Works on a terminal and with piped standard input (one user turn per line).
"""
import sys

from tinyqmoe.cli.common import add_model_options, add_sampling_options, load_model, sampling_kwargs


def register(sub) -> None:
    p = sub.add_parser("chat", help="interactive chat (one user turn per line; /reset, /exit)")
    add_model_options(p)
    p.add_argument("--system", default=None, help="system prompt")
    add_sampling_options(p, default_tokens=256)
    p.set_defaults(func=run)


def run(args) -> int:
    kwargs = sampling_kwargs(args)
    model = load_model(args)
    session = model.chat_session(system=args.system)
    tty = sys.stdin.isatty()
    if tty:
        print("(chat with the model; /reset clears the history, /exit or Ctrl-D quits)", file=sys.stderr)
    while True:
        if tty:
            try:
                line = input("> ")
            except EOFError:
                print()
                return 0
        else:
            line = sys.stdin.readline()
            if not line:
                return 0
            line = line.rstrip("\n")
            if line.strip():
                print(f"> {line}")  # show the piped turn, as a terminal would
        if not line.strip():
            continue
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            session = model.chat_session(system=args.system)
            continue
        for piece in session.send(line, **kwargs):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        s = model.last_stats
        if tty:
            print(f"[{s.prompt_tokens} new prompt tok, {s.generated} generated, {s.gen_tps:.1f} tok/s]",
                  file=sys.stderr)
