"""Options shared by the verbs; their values mean what docs/conventions.md says."""
from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger("tinyqmoe")

MODEL_HELP = ("HF directory, .gguf or .tqm file, 'default', or ORG/NAME[:QUANT] from the local Hugging Face "
              "cache")


def add_model_argument(p: argparse.ArgumentParser, help: str = MODEL_HELP, required: bool = True) -> None:
    """MODEL as a positional or as -m/--model (llama.cpp's spelling); giving both is an error."""
    p.add_argument("model", nargs="?", default=None, help=help)
    p.add_argument("-m", "--model", dest="model_opt", metavar="MODEL", default=None,
                   help="the model, as an option instead of the positional")
    p.set_defaults(model_required=required)


def finish_model_argument(args) -> None:
    """Merge -m/--model into args.model (called once after parsing)."""
    from tinyqmoe.errors import UsageError

    opt = getattr(args, "model_opt", None)
    if opt is not None:
        if args.model is not None:
            raise UsageError(f"the model is given twice ({args.model!r} and -m {opt!r}): give it once")
        args.model = opt
    if getattr(args, "model_required", False) and args.model is None:
        raise UsageError("name a model: tinyqmoe VERB MODEL ... or -m MODEL")


def add_threads_option(p: argparse.ArgumentParser, what: str = "threads") -> None:
    p.add_argument("-t", "--threads", type=int, default=-1, metavar="N",
                   help=f"{what}: 1..cores, or -1 / 0 for every core this process may use (default -1)")


def threads_arg(n: int) -> int | None:
    """--threads as the API takes it: None for all cores (-1, 0), else 1..cores; anything else is an error."""
    from tinyqmoe.errors import UsageError

    if n in (-1, 0):
        return None
    cores = os.cpu_count() or 1
    if not 1 <= n <= cores:
        raise UsageError(f"--threads {n}: expected 1..{cores} (the cores of this machine), or -1 for all")
    return n


def add_progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are drawn only on a terminal anyway)")


def show_progress(args) -> bool:
    """Whether bars may be drawn; they then appear only if stderr is a terminal."""
    return not (getattr(args, "quiet", False) or getattr(args, "no_progress", False))


def info(args, text: str) -> None:
    """An informational line on stderr, unless --quiet."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


def add_model_options(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--weights", choices=("int8", "f32", "native"), default=None,
                   help="how a float checkpoint runs: int8 (default) or f32 (reference); native: a GGUF's own "
                        "Q8_0, Q4_0 or Q4_1 blocks as they are; a .tqm container runs the weights it holds")
    p.add_argument("--group", type=int, default=None,
                   help="int8 scale per group of this many inputs (default: one per output channel)")
    add_threads_option(p)
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="bound on this process's peak RSS (VmHWM), e.g. 300MB (decimal; MiB binary): "
                        "picks the fastest weight source that fits, or refuses before loading")
    p.add_argument("--source", choices=("auto", "resident", "streamed", "fused"), default="auto",
                   help="where weights live while running (default: resident, or what fits --max-memory)")
    p.add_argument("--cold", action="store_true",
                   help="streamed/fused: drop the file's pages after each read (weights come from storage)")
    p.add_argument("--storage-bw", default=None, metavar="RATE",
                   help="streamed/fused: emulate storage of this speed over a warm page cache, e.g. 90MB/s "
                        "(an SD card), 300MB/s (eMMC); see docs/streaming.md")
    p.add_argument("-c", "--ctx-size", "--context", dest="context", type=int, default=None, metavar="N",
                   help="positions the KV cache holds (prompt + generated); 0 = the model's own "
                        "(default: the model's own, 1024 with --max-memory)")
    p.add_argument("-ctk", "--cache-type-k", choices=("f32", "f16"), default="f32",
                   help="how the KV cache holds keys: f32 (default: the reference numbers) or f16 "
                        "(half the memory; llama.cpp's default)")
    p.add_argument("-ctv", "--cache-type-v", choices=("f32", "f16"), default="f32",
                   help="how the KV cache holds values: f32 (default) or f16")
    p.add_argument("--no-cache", action="store_true",
                   help="quantize float checkpoints in memory instead of caching their int8 weights")
    add_progress_option(p)


def add_sampling_options(p: argparse.ArgumentParser, default_tokens: int = 128) -> None:
    p.add_argument("-n", "--max-new-tokens", "--n-predict", dest="max_new_tokens", type=int,
                   default=default_tokens, metavar="N",
                   help=f"tokens to generate at most; -1 = until end of sequence or a full context "
                        f"(default {default_tokens})")
    p.add_argument("--temp", "--temperature", dest="temperature", type=float, default=0.0, metavar="T",
                   help="sampling temperature; <= 0 = greedy (default 0)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="keep the K most likely tokens; 0 = off")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling, 0..1; 1 = off")
    p.add_argument("--min-p", type=float, default=0.0, metavar="P",
                   help="drop tokens less likely than P x the most likely one, 0..1; 0 = off")
    p.add_argument("--repeat-penalty", type=float, default=1.0, metavar="R",
                   help="penalise tokens seen in the last --repeat-last-n tokens; 1 = off")
    p.add_argument("--repeat-last-n", type=int, default=64, metavar="N",
                   help="tokens the repeat penalty looks back over; 0 = off, -1 = the whole context (default 64)")
    p.add_argument("-s", "--seed", type=int, default=-1, metavar="N",
                   help="random seed; -1 = a random one (default)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="never end at the model's end-of-sequence token (run to -n or a full context)")
    p.add_argument("-r", "--reverse-prompt", "--stop", dest="stop", action="append", default=None, metavar="TEXT",
                   help="stop string (repeatable): the output ends before it; \\n, \\t, \\\\ are escapes")


def unescape(text: str) -> str:
    """llama.cpp's escapes in a command-line string: \\n \\t \\r \\\\ \\' \\" (others are kept as written)."""
    out, i = [], 0
    table = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def sampling_kwargs(args) -> dict:
    """The sampling options as API keywords, checked against docs/conventions.md before any loading."""
    from tinyqmoe.errors import UsageError
    from tinyqmoe.model.sampling import SamplingParams

    if args.max_new_tokens < -1:
        raise UsageError(f"-n {args.max_new_tokens}: expected N >= 0, or -1 for no limit")
    SamplingParams(args.temperature, args.top_k, args.top_p, args.seed, args.min_p, args.repeat_penalty,
                   args.repeat_last_n).check()
    stops = [unescape(s) for s in args.stop or []]
    if any(s == "" for s in stops):
        raise UsageError("-r/--stop: a stop string must not be empty")
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                repeat_last_n=args.repeat_last_n, seed=None if args.seed == -1 else args.seed,
                ignore_eos=args.ignore_eos, stop=stops or None)


def check_model_options(args) -> None:
    """Option values checked before any loading, so a mistake costs no time."""
    from tinyqmoe.errors import UsageError

    if args.group is not None and args.group <= 0:
        raise UsageError(f"--group {args.group}: expected a positive number of inputs")
    if args.context is not None and args.context < 0:
        raise UsageError(f"--context {args.context}: expected N >= 1, or 0 for the model's own")
    if args.max_memory is not None:
        from tinyqmoe.units import parse_size

        parse_size(args.max_memory, "--max-memory")
    threads_arg(args.threads)


def cache_types(args) -> dict:
    """The KV cache types given on the command line, as load() keywords."""
    return {"cache_type_k": args.cache_type_k, "cache_type_v": args.cache_type_v}


def load_model(args):
    import tinyqmoe
    from tinyqmoe.errors import UsageError
    from tinyqmoe.locate import is_container, resolve

    check_model_options(args)
    path = resolve(args.model)
    if args.weights == "f32" and is_container(path):
        raise UsageError("--weights f32 runs float checkpoints (HF, float GGUF); a .tqm container runs the "
                         "weights it holds: drop --weights, or give the original checkpoint", path)
    model = tinyqmoe.load(path, weights=args.weights or "int8", threads=threads_arg(args.threads),
                          group=args.group, progress=show_progress(args), max_memory=args.max_memory,
                          source=args.source, cold=args.cold, context=args.context, cache=not args.no_cache,
                          storage_bw=getattr(args, "storage_bw", None), **cache_types(args))
    model.name = str(args.model)
    log.info("loaded %s: %s weights, %s source, context %d, %d threads, %.2f s", args.model, model.weights_kind,
             model.source, model.max_context, model.threads, model.load_seconds)
    if model.prefill_path == "int8":
        log.info("prefill multiplies int8 activations x int8 weights (kernels/gemm_i8.py), row blocks of %d bytes "
                 "(%s)", model.runtime.gemm_block_bytes, "an eighth of the L2 in hw.json" if _stored_l2()
                 else "no probe stored: the default")
    else:
        log.info("prefill multiplies blocks of %d bytes of dequantized rows (%s)", model.runtime.block_bytes,
                 "half the L2 in hw.json" if _stored_l2() else "no probe stored: the default")
    return model


def _stored_l2() -> int | None:
    from tinyqmoe.runtime import stored_l2_bytes

    return stored_l2_bytes()


def log_seed(args, stats) -> None:
    """With -v: the seed a sampled generation used (drawn at random unless --seed was given)."""
    if args.temperature > 0:
        log.info("seed %d%s", stats.seed, " (drawn at random: --seed it to repeat)" if args.seed == -1 else "")
