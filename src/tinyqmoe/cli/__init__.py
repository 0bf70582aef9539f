"""The `tinyqmoe` command line: thin verbs over the Python API.

Each verb lives in its own module under `tinyqmoe.cli` and exposes
`register(subparsers)`, which adds a parser whose default `func(args)` runs it.
Verb modules import nothing heavy at module level, so `tinyqmoe --help` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from tinyqmoe.errors import TinyQMoEError

# One module per verb (or family of verbs), in the order `--help` lists them.
VERB_MODULES = (
    "fetch",
    "generate",
    "chat",
    "serve",
    "bench",
    "compress",
    "eval",
    "probe",
    "tile",
    "synth",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyqmoe",
        description="Llama-class models on small CPUs: quantize, compress, run, evaluate, tile.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(f"tinyqmoe.cli.{name}")
        except ModuleNotFoundError as exc:  # a verb still being built on this branch
            if exc.name != f"tinyqmoe.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, `kill` and service managers send), raised like Ctrl-C so that every
    `finally` and `except BaseException` cleans up (temporary files, threads) the same way."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import signal

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(args.func(args) or 0)
    except TinyQMoEError as exc:
        if args.debug:
            raise
        print(f"tinyqmoe: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        terminated = isinstance(exc, Terminated)
        print(f"tinyqmoe: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except UnicodeDecodeError as exc:   # standard input (`-p -`, chat) that is not UTF-8
        if args.debug:
            raise
        print(f"tinyqmoe: the input is not valid UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
              f"position {exc.start})", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tinyqmoe generate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
