"""tinyqmoe chat: an interactive conversation using the model's chat template.

Works on a terminal (line editing and history through readline) and with piped standard input
(one user turn per line).
"""
import sys

from tinyqmoe.cli.common import (add_model_options, add_sampling_options, info, load_model, log_seed,
                                 sampling_kwargs)

HISTORY_LINES = 1000


def register(sub) -> None:
    p = sub.add_parser("chat", help="interactive chat (one user turn per line; /reset, /exit)",
                       description="Chat with the model's chat template. On a terminal, lines are edited with "
                                   "readline (arrows, history kept in $TINYQMOE_CACHE/chat_history); piped, "
                                   "each line is one user turn. A reply cut by -n, a full context or a stop "
                                   "string is followed by a [stopped: ...] line on stderr.")
    add_model_options(p)
    p.add_argument("--system", default=None, help="system prompt")
    add_sampling_options(p, default_tokens=256)
    p.set_defaults(func=run)


def _readline_history():
    """Turn on line editing and a persistent history; returns a function that saves it (or None)."""
    try:
        import readline
    except ImportError:  # not every Python has it (e.g. Windows): plain input() then
        return None
    from tinyqmoe.assets import cache_dir

    path = cache_dir() / "chat_history"
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(HISTORY_LINES)

    def save():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError:
            pass

    return save


def run(args) -> int:
    from tinyqmoe.errors import UsageError

    kwargs = sampling_kwargs(args)
    model = load_model(args)
    session = model.chat_session(system=args.system)
    tty = sys.stdin.isatty()
    save_history = _readline_history() if tty else None
    if tty:
        info(args, "(chat with the model; /reset clears the history, /exit or Ctrl-D quits)")
    try:
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
            try:
                pieces = session.send(line, **kwargs)
            except UsageError as exc:  # e.g. the conversation no longer fits the context
                if not tty:
                    raise
                print(f"tinyqmoe: {exc.one_line()} (/reset starts over)", file=sys.stderr)
                continue
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            sys.stdout.flush()
            s = model.last_stats
            log_seed(args, s)
            stop = s.describe_stop()
            if stop:
                print(stop, file=sys.stderr)
            if tty:
                info(args, f"[{s.prompt_tokens} new prompt tok, {s.generated} generated, {s.gen_tps:.1f} tok/s]")
    finally:
        if save_history is not None:
            save_history()
