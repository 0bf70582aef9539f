"""Memory budget: an explicit account of what a run keeps in RAM, and the fastest source that fits.

Peak RSS = max(this process's peak so far, what it holds now (measured: interpreter, numpy,
numba/llvmlite with LLVM started, the tokenizer; memory a finished step freed, such as building the int8
cache, is not counted) + kernels (loading the compiled numba kernels, the threads' stacks, the library
pages a forward pass touches) + weights held by the source + KV cache for the context + activations.
Page cache is not RSS: the streamed and fused sources read the file with pread, so its pages never count
against the budget.

"Now" and the peak so far are measured rather than assumed: a budgeted load starts LLVM before the
tokenizer, with the clean pages of the 180 MB libllvmlite.so dropped before and after (warmup.py), so
its transient pages are in the peak so far, and how much of the library the page cache had mapped does
not change "now".
"""
from __future__ import annotations

import dataclasses

from tinyqmoe.errors import MemoryBudgetError, UsageError
from tinyqmoe.kernels.matvec import SMALL_BATCH
from tinyqmoe.memory import drop_clean_library_pages, peak_rss_bytes, rss_bytes, trim_heap  # noqa: F401
from tinyqmoe.weights.source import SOURCES

from tinyqmoe.units import MB  # sizes are shown in decimal megabytes (tinyqmoe.units parses them)
# Measured growth of RSS from the moment the budget is measured (LLVM started, tokenizer built, library
# pages dropped) to the end of a first generation, weights and KV cache aside: the kernels the warm-up
# child listed, loaded before the weights with the library pages dropped after each (warmup.py), the
# threads, the library pages a forward pass faults in (`benchmarks/runtime_floor.py --run`: the growth
# less the estimate's weights and activations and the KV cache the run touched). AMD EPYC family 25,
# December. A venv whose libllvmlite.so has been in the page cache a while: default model +9 MB fused,
# +11 streamed, +30 resident (LZW container: its decoders load too); tiny model +21-22 MB; 1B shape,
# fused, +3-6 MB. A freshly installed venv (a fresh clone in CI), whose just-written libraries the kernel
# maps in large folios: loading one cached kernel faults 40-50 MB of LLVM's pages at once, default model
# +40-49 MB fused, +36-44 streamed (two fresh clones). (It was +74-140 MB when the first forward pass faulted LLVM's pages in on
# top of everything else.) The largest, with a margin.
KERNELS = 60 * MB


# Rows of one forward call the estimate always holds: room for two pieces of a prompt each longer than the
# SMALL_BATCH (16) rows that still run the decode kernels, so that a prompt cut into pieces keeps the
# prompt arithmetic (api.Model._in_pieces)
MIN_ROWS = 2 * (SMALL_BATCH + 1)
MAX_ROWS = 512    # more rows per call than this buy no speed


def act_bytes(c) -> int:
    """Bytes one row (token) of a forward call holds: its activations (model/state.Activations) and the
    temporaries of a linear's output."""
    return 4 * (2 * c.ffn_dim + 3 * c.dim + c.q_dim + 2 * c.kv_dim) + 4 * 2 * c.ffn_dim


def row_bytes(c) -> int:
    """act_bytes and the row's logits, when all rows' logits are asked for (scoring continuations)."""
    return act_bytes(c) + 4 * c.vocab_size


def rows_within(budget: int, est: "Estimate", c) -> int:
    """Rows per forward call a run may take under `budget`: MIN_ROWS (in the estimate) plus what half the
    budget's slack over the estimate holds (the other half a margin for the estimate's error), at most
    MAX_ROWS. Longer prompts run in pieces of this many rows (api.Model)."""
    slack = max(0, budget - sum(est.parts.values()))
    return int(min(MAX_ROWS, MIN_ROWS + slack // 2 // row_bytes(c)))


def mb(n: int) -> str:
    """A size as users read budgets: decimal MB, or KB below one MB."""
    return f"{n / MB:.0f} MB" if n >= MB else f"{n / 1000:.0f} KB"


def mb_up(n: int) -> str:
    """A need in whole MB, rounded up: a budget of the number shown fits."""
    return f"{-(-n // MB)} MB"


@dataclasses.dataclass
class Estimate:
    source: str
    parts: dict[str, int]
    floor: int = 0          # the process's peak so far: the run's peak is never below it

    @property
    def total(self) -> int:
        return max(sum(self.parts.values()), self.floor)

    def describe(self) -> str:
        text = ", ".join(f"{k} {mb(v)}" for k, v in self.parts.items() if v >= MB // 2)
        return text + (f"; peak so far {mb(self.floor)}" if self.floor > sum(self.parts.values()) else "")


def estimate(container, source: str, context: int, threads: int, so_far: tuple[int, int] | None = None,
             kv_bytes: tuple[int, int] = (4, 4)) -> Estimate:
    """Peak RSS of running `container` with `source` for `context` tokens (KV caches of kv_bytes per
    key and per value element), on top of what the process holds now; never below its peak so far.
    `so_far` = (resident now, peak so far), measured when not given: call it after building the
    tokenizer. (Resident now, not the peak, is the base: memory a
    step freed, e.g. building the int8 cache of a float checkpoint, is not held while running.)"""
    c = container.config
    entries = [container.tensor(n) for n in container.names]
    int8_bytes = lambda e: e.shape[0] * e.shape[1] if len(e.shape) == 2 else 0  # noqa: E731
    scales = sum(e.scale_size for e in entries if e.qtype != "f32")
    floats = sum(e.raw_bytes for e in entries if e.qtype == "f32")
    layer0 = [e for e in entries if e.name.startswith("model.layers.0.") and len(e.shape) == 2]
    max_stored = max(int(e.chunks["stored_size"].max()) for e in entries if e.n_chunks)
    max_raw = max(int(e.chunks["raw_size"].max()) for e in entries if e.n_chunks)
    if source == "resident":   # 4-bit rows stay packed where the kernels take them (weights/resident.py)
        from tinyqmoe.weights.resident import resident_packed

        weights = sum(e.raw_bytes if resident_packed(e) else int8_bytes(e) for e in entries) + scales + floats
    elif source == "streamed":   # 4-bit rows of whole blocks stay packed in its buffers (weights/streamed.py)
        from tinyqmoe.weights.resident import resident_packed

        layer_bytes = sum(e.raw_bytes if resident_packed(e) else int8_bytes(e) for e in layer0)
        weights = 2 * layer_bytes + scales + floats + threads * (max_stored + 2 * max_raw)
    elif source == "fused":   # per thread: the compiled loop's buffers, and a codec's transient tables
        from tinyqmoe.weights.fused import scratch_bytes_per_thread

        per_thread = scratch_bytes_per_thread([e for e in entries if len(e.shape) == 2]) + 16384
        weights = 2 * scales + floats + threads * per_thread
    else:
        raise UsageError(f"unknown weight source {source!r}")
    kv = sum(kv_bytes) * c.n_layers * c.n_kv_heads * c.head_dim * context
    acts = 4 * 3 * c.vocab_size + MIN_ROWS * act_bytes(c)
    if so_far is None:
        drop_clean_library_pages()
    now, peak = (rss_bytes(), peak_rss_bytes()) if so_far is None else so_far
    return Estimate(source, {"process now": now, "kernels": KERNELS, "weights": weights, "kv cache": kv,
                             "activations": acts}, floor=peak)


def choose_source(container, max_memory: int, context: int, threads: int,
                  sources: tuple[str, ...] = SOURCES, name: str | None = None,
                  kv_bytes: tuple[int, int] = (4, 4), sequences: int = 1) -> Estimate:
    """The fastest of `sources` whose estimate fits `max_memory` with KV caches of `context` positions for
    each of `sequences`, or MemoryBudgetError naming the minimum (and the model as the user named it)."""
    drop_clean_library_pages()
    so_far = (rss_bytes(), peak_rss_bytes())
    estimates = [estimate(container, s, context * sequences, threads, so_far, kv_bytes)
                 for s in sources]  # fastest first
    for est in estimates:
        if est.total <= max_memory:
            return est
    least = min(estimates, key=lambda e: (e.total, sum(e.parts.values())))   # ties at the peak so far: by need
    others = ", ".join(f"{e.source} {mb(e.total)}" for e in estimates if e is not least)
    raise MemoryBudgetError(
        f"a budget of {mb(max_memory)} is too small: the smallest run ({least.source}, "
        f"context {context}{f' for each of {sequences} sequences' if sequences > 1 else ''}) needs about "
        f"{mb_up(least.total)} ({least.describe()}; {others}); "
        f"a shorter context (--context){' or an f16 KV cache (-ctk f16 -ctv f16)' if max(kv_bytes) > 2 else ''} "
        f"shrinks the KV cache", name or container.path)
