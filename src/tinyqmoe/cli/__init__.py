"""The `tinyqmoe` command line: thin verbs over the Python API.

Each verb lives in its own module under `tinyqmoe.cli` and exposes
`register(subparsers)`, which adds a parser whose default `func(args)` runs it.
Verb modules import nothing heavy at module level, so `tinyqmoe --help` is instant.
Option values mean what docs/conventions.md says; options are never abbreviated.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import logging
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
    "completion",
)


# Packages behind an extra (pyproject.toml): a verb that needs one says how to install it.
OPTIONAL_PACKAGES = {"pyarrow": "eval", "matplotlib": "plot", "ray": "distributed",
                     "fastapi": "server", "starlette": "server", "uvicorn": "server", "sse_starlette": "server"}


def _output_options(defaults: bool) -> argparse.ArgumentParser:
    """-v / -q / --debug, accepted before the verb and after it (there with no default of their own,
    so `tinyqmoe -v generate ...` is not undone by the verb's parser)."""
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("-v", "--verbose", action="count", default=d(0),
                   help="log decisions on stderr (weight source, seed, cache sizes); -vv for more")
    p.add_argument("-q", "--quiet", action="store_true", default=d(False),
                   help="no progress bars or informational lines (results and errors still print)")
    p.add_argument("--debug", action="store_true", default=d(False), help="show tracebacks on errors")
    return p


def build_parser() -> argparse.ArgumentParser:
    from tinyqmoe import __version__

    parser = argparse.ArgumentParser(
        prog="tinyqmoe", allow_abbrev=False, parents=[_output_options(True)],
        description="Llama-class models on small CPUs: quantize, compress, run, evaluate, tile. "
                    "Option values follow llama.cpp's conventions (docs/conventions.md).")
    parser.add_argument("--version", action="version", version=f"tinyqmoe {__version__}")
    verb_parser = functools.partial(argparse.ArgumentParser, allow_abbrev=False, parents=[_output_options(False)])
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=verb_parser)
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(f"tinyqmoe.cli.{name}")
        except ModuleNotFoundError as exc:  # a verb still being built on another branch
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


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="tinyqmoe: %(message)s", stream=sys.stderr)
    if verbose < 2:  # libraries' own chatter stays out unless asked for
        for name in ("numba", "urllib3", "filelock", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import signal

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        from tinyqmoe.cli.common import finish_model_argument

        finish_model_argument(args)
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
    except ModuleNotFoundError as exc:
        extra = OPTIONAL_PACKAGES.get((exc.name or "").split(".")[0])
        if extra is None or args.debug:
            raise
        print(f"tinyqmoe: {args.verb} needs the optional package {exc.name.split('.')[0]}: "
              f"pip install 'tinyqmoe[{extra}]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
