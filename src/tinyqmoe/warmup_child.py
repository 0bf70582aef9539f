"""The child process of tinyqmoe.warmup: `python -m tinyqmoe.warmup_child int8 PATH GROUP PROGRESS
[native]` builds the int8 cache of a float checkpoint (or the native one of a GGUF); `... kernels TQM
SOURCE THREADS LIST [CTK CTV]` loads a container with a source (and KV caches of those types) and runs
a short prompt, a long one (over SMALL_BATCH tokens: other kernels) and a decode, so numba compiles and
caches those kernels, and writes their list (module, name, signatures; a pickle) to LIST.
An error comes back on stdout as one JSON line (class, message, path), which the parent raises again."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import tinyqmoe.errors as errors


def _child(argv: list[str]) -> None:
    if argv[0] == "int8":
        from tinyqmoe.api import _int8_cache

        _int8_cache(Path(argv[1]), int(argv[2]) or None, argv[3] == "1", argv[4:5] == ["native"])
    elif argv[0] == "kernels":
        import pickle

        from tinyqmoe.api import load
        from tinyqmoe.warmup import compiled_kernels

        from tinyqmoe.kernels.matvec import SMALL_BATCH

        ctk, ctv = argv[5:7] if len(argv) > 6 else ("f32", "f32")
        with load(argv[1], source=argv[2], threads=int(argv[3]), context=SMALL_BATCH + 16,
                  cache_type_k=ctk, cache_type_v=ctv) as model:
            ids = model.tokenizer.encode("The capital of France is")[:6] or [1, 2, 3]
            list(model.stream_ids(ids, max_new_tokens=3))                         # short prompt, decode
            list(model.stream_ids((ids * SMALL_BATCH)[:SMALL_BATCH + 4], max_new_tokens=1))   # a long prompt
        if len(argv) > 4:
            Path(argv[4]).write_bytes(pickle.dumps(compiled_kernels()))
    else:
        raise errors.UsageError(f"unknown warm-up job {argv[0]!r}")


def main(argv: list[str] | None = None) -> int:
    try:
        _child(sys.argv[1:] if argv is None else argv)
    except errors.TinyQMoEError as exc:
        print(json.dumps({"class": type(exc).__name__, "message": exc.message, "path": exc.path}))
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
