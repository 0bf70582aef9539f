"""First run under a memory budget: do the one-off work in a child process.

Compiling the numba kernels (LLVM) and building the int8 cache of a float checkpoint each raise a
process's resident set for good: on an AMD EPYC Zen 3, `generate default --max-memory 300MB` with a
cold kernel cache peaked at 321 MB, and at 214 MB once the kernels were cached (numba `cache=True`
writes them to disk). So under a budget, `load()` does that work in a child process first: the child
builds the int8 cache if it is missing, then loads the container with the chosen source and runs a
short and a long prompt and a decode, which compiles (and caches) exactly the kernels the parent will
use. The parent then only loads cached kernels, which the budget's KERNELS term measures.

A stamp file per (code, numba, CPU, source, container layout and depth) in the cache directory says
that the kernels were compiled; the child runs at most once per stamp. Beside it the child leaves the
list of kernels it compiled (module, name, signatures).

LLVM's code is mapped from the 180 MB libllvmlite.so, and what a step needs of it is resident only
while that step runs: its pages are clean file pages, dropped again with `drop_clean_library_pages`.
So a budgeted load starts LLVM (numba compiles its runtime module at every start) before the
tokenizer, then loads that list of kernels from numba's cache one by one before the weights, dropping
the library pages after each step: the process never holds LLVM's pages on top of the tokenizer or
the weights (default model, fused, context 128, AMD EPYC: peak 171 -> 137 MB; docs/streaming.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import tinyqmoe.errors as errors


def code_key() -> str:
    """What a cached kernel depends on: this package's sources (numba keys its cache on each file's size
    and mtime), numba, Python, the CPU and where numba caches."""
    import llvmlite.binding as llvm
    import numba

    pkg = Path(__file__).parent
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        st = f.stat()
        h.update(f"{f.relative_to(pkg)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update(f"{numba.__version__}|{sys.version}|{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features()}|"
             f"{os.environ.get('NUMBA_CACHE_DIR', '')}".encode())
    return h.hexdigest()[:16]


def _stamp(container, source: str, cache_types: tuple[str, str] = ("f32", "f32")) -> Path:
    from tinyqmoe.assets import cache_dir

    layout = set()   # what picks a kernel's types: quantization, grouping, scale type, codecs, layers
    for e in (container.tensor(n) for n in container.names):
        codecs = tuple(sorted(set(e.chunks["codec"].tolist()))) if e.n_chunks else ()
        layout.add((e.qtype, e.group > 0, e.scale_dtype, len(e.shape), codecs))
    layout = sorted(layout, key=str)
    layers = container.config.n_layers   # the resident decode kernel takes one tuple of n_layers arrays
    kv = "" if cache_types == ("f32", "f32") else f"|kv={cache_types}"   # the KV cache's element types
    tag = hashlib.sha256(f"{source}|{layout}|{layers}{kv}".encode()).hexdigest()[:12]
    return cache_dir() / "kernels" / f"{code_key()}-{tag}.ok"


def _run_child(args: list[str], what: str) -> None:
    """Run `python -m tinyqmoe.warmup_child ARGS`; its progress goes to our stderr, its error comes back raised."""
    r = subprocess.run([sys.executable, "-m", "tinyqmoe.warmup_child", *args], stdout=subprocess.PIPE, text=True)
    if r.returncode == 0:
        return
    try:
        err = json.loads(r.stdout.strip().splitlines()[-1])
        cls = getattr(errors, err["class"], errors.TinyQMoEError)
        raise cls(err["message"], err.get("path"))
    except (json.JSONDecodeError, IndexError, KeyError, TypeError):
        raise errors.TinyQMoEError(f"{what} failed in a child process (exit code {r.returncode})") from None


def int8_cache_in_child(path: Path, group: int | None, progress: bool, native: bool = False) -> None:
    """Build the int8 (or native) cache of a checkpoint in a child process (its peak is not ours)."""
    _run_child(["int8", str(path), str(group or 0), "1" if progress else "0", "native" if native else "int8"],
               "building the weights cache")


def kernels_in_child(container, source: str, threads: int, cache_types: tuple[str, str] = ("f32", "f32")) -> bool:
    """Compile the kernels `source` uses on `container` (with KV caches of `cache_types`) in a child
    process, once. True if it ran."""
    stamp = _stamp(container, source, cache_types)
    if stamp.exists() and stamp.with_suffix(".kernels").exists():
        return False
    t0 = time.perf_counter()
    print(f"tinyqmoe: compiling the {source} kernels once, in a child process (a first run under a memory "
          f"budget)...", file=sys.stderr, flush=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    listed = stamp.with_suffix(f".{os.getpid()}.kernels.tmp")
    _run_child(["kernels", str(container.path), source, str(threads), str(listed), *cache_types],
               "compiling the kernels")
    os.replace(listed, stamp.with_suffix(".kernels"))
    tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(f"compiled in {time.perf_counter() - t0:.1f} s\n")
    os.replace(tmp, stamp)
    return True


def compiled_kernels() -> list[tuple[str, str, list]]:
    """(module, name, signatures) of this package's cached numba kernels compiled in this process."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    seen, out = set(), []
    for name, module in list(sys.modules.items()):
        if not name.startswith("tinyqmoe"):
            continue
        for obj in list(vars(module).values()):
            if (isinstance(obj, Dispatcher) and id(obj) not in seen and obj.signatures
                    and not isinstance(getattr(obj, "_cache", None), (NullCache, type(None)))):
                seen.add(id(obj))
                out.append((obj.py_func.__module__, obj.py_func.__qualname__, list(obj.signatures)))
    return out


def start_llvm() -> None:
    """Start numba's LLVM (typing and target contexts; the runtime module it compiles at every start)
    with the library pages dropped before and after each step."""
    from tinyqmoe.memory import drop_clean_library_pages

    drop_clean_library_pages()
    try:
        from numba.core.registry import cpu_target

        cpu_target.typing_context.refresh()
        drop_clean_library_pages()
        cpu_target.target_context.refresh()     # compiles numba's runtime (NRT) module
    except Exception:  # noqa: BLE001  numba internals: without them kernels start LLVM on first use
        pass
    drop_clean_library_pages()


def load_kernels(container, source: str, cache_types: tuple[str, str] = ("f32", "f32")) -> int:
    """Load, from numba's cache, the kernels the child compiled for `source`, dropping the library pages
    after each; then hand back the heap LLVM freed. -> kernels loaded (0 without a list)."""
    import importlib
    import pickle

    from tinyqmoe.memory import drop_clean_library_pages, trim_heap

    try:
        listed = pickle.loads(_stamp(container, source, cache_types).with_suffix(".kernels").read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return 0
    loaded = 0
    for module, name, signatures in listed:
        try:
            kernel = getattr(importlib.import_module(module), name)
            for sig in signatures:
                kernel.compile(sig)      # numba loads a cached signature; compiles only if its cache is gone
                drop_clean_library_pages()
            loaded += 1
        except Exception:  # noqa: BLE001  a kernel that no longer exists: it loads on first use instead
            continue
    trim_heap()
    drop_clean_library_pages()
    return loaded
