"""Memory budget: an explicit account of what a run keeps in RAM, and the fastest source that fits.

Peak RSS = runtime floor (interpreter, numpy, numba with the compiled kernels, measured) + tokenizer
+ weights held by the source + KV cache for the context + activations. Page cache is not RSS: the
streamed and fused sources read the file with pread, so its pages never count against the budget.
"""
from __future__ import annotations

import dataclasses
import re

from tinyqmoe.errors import MemoryBudgetError, UsageError

MB = 10**6  # sizes are shown and parsed in decimal megabytes, as users write them
# What a process holds before any weights: interpreter, numpy, numba/llvmlite with the compiled model
# and codec kernels, tokenizers, thread stacks. Measured as peak RSS minus the other parts of this
# account: 174 MB for a tiny model, 195 MB for the default model with LZW decoding (VmHWM, Linux).
RUNTIME_FLOOR = 205 * MB
# The Rust tokenizer holds several copies of its vocabulary and merges: ~4x its JSON size.
TOKENIZER_FACTOR = 4

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20,
          "g": 10**9, "gb": 10**9, "gib": 1 << 30}


def parse_size(text: str | int) -> int:
    """'300MB', '1.5GiB', '400M', 123456 -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"cannot read memory size {text!r} (use e.g. 300MB, 1.5GB, 512MiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclasses.dataclass
class Estimate:
    source: str
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        return ", ".join(f"{k} {v / MB:.0f} MB" for k, v in self.parts.items() if v >= MB // 2)


def estimate(container, source: str, context: int, threads: int) -> Estimate:
    """Peak RSS of running `container` with `source` for `context` tokens."""
    c = container.config
    entries = [container.tensor(n) for n in container.names]
    int8_bytes = lambda e: e.shape[0] * e.shape[1] if len(e.shape) == 2 else 0  # noqa: E731
    scales = sum(e.scale_size for e in entries if e.qtype != "f32")
    floats = sum(e.raw_bytes for e in entries if e.qtype == "f32")
    layer0 = [e for e in entries if e.name.startswith("model.layers.0.") and len(e.shape) == 2]
    max_stored = max(int(e.chunks["stored_size"].max()) for e in entries if e.n_chunks)
    max_raw = max(int(e.chunks["raw_size"].max()) for e in entries if e.n_chunks)
    if source == "resident":
        weights = sum(int8_bytes(e) for e in entries) + scales + floats
    elif source == "streamed":
        weights = 2 * sum(int8_bytes(e) for e in layer0) + scales + floats + threads * (max_stored + 2 * max_raw)
    elif source == "fused":
        weights = scales + floats + threads * (max_stored + 2 * max_raw)
    else:
        raise UsageError(f"unknown weight source {source!r}")
    tok = len(container.tokenizer.tokenizer_json.encode()) * TOKENIZER_FACTOR if container.tokenizer else 0
    kv = 2 * c.n_layers * c.n_kv_heads * c.head_dim * 4 * context
    acts = 4 * (3 * c.vocab_size + 16 * (2 * c.ffn_dim + 3 * c.dim + c.q_dim + 2 * c.kv_dim))
    return Estimate(source, {"runtime": RUNTIME_FLOOR, "tokenizer": tok, "weights": weights, "kv cache": kv,
                             "activations": acts})


def choose_source(container, max_memory: int, context: int, threads: int) -> Estimate:
    """The fastest source whose estimate fits `max_memory`, or MemoryBudgetError naming the minimum."""
    from tinyqmoe.model.sources import SOURCES

    estimates = [estimate(container, s, context, threads) for s in SOURCES]  # fastest first
    for est in estimates:
        if est.total <= max_memory:
            return est
    least = min(estimates, key=lambda e: e.total)
    raise MemoryBudgetError(
        f"a budget of {max_memory / MB:.0f} MB is too small: the smallest run ({least.source}, "
        f"context {context}) needs about {least.total / MB:.0f} MB ({least.describe()}); a shorter context "
        f"(--context) shrinks the KV cache", container.path)
