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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TinyQMoEError as exc:
        if args.debug:
            raise
        print(f"tinyqmoe: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("tinyqmoe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tinyqmoe generate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
