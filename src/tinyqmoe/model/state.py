"""The state of a run, allocated once (as llama2.c's RunState): one sequence's KV cache, and the
activation buffers the forward pass reuses from token to token.

Shape letters: L layers, K kv heads, S positions, E head dim, D model dim, N rows in one call.
"""
from __future__ import annotations

import mmap

import numpy as np

from tinyqmoe.errors import UsageError
from tinyqmoe.kernels.half import STORAGE, has_f16c
from tinyqmoe.model.config import LlamaConfig
from tinyqmoe.model.rope import inv_frequencies

CACHE_TYPES = tuple(STORAGE)    # "f32", "f16": how keys and values are held (docs/conventions.md)
STORAGE_BYTES = {name: np.dtype(t).itemsize for name, t in STORAGE.items()}   # bytes per element


def check_cache_type(name: str, what: str = "cache type") -> str:
    if name not in STORAGE:
        raise UsageError(f"unknown {what} {name!r} (choose {', '.join(CACHE_TYPES)})")
    if name == "f16" and not has_f16c():
        raise UsageError(f"{what} f16 needs a CPU with F16C (half-precision conversions); this one has none")
    return name


def zero_pages(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """An array of zeros whose pages become resident only when written: anonymous memory with
    transparent huge pages refused (numpy asks for them on large arrays, and one 2 MB page per
    [layer, kv head] row would make the first position of a KV cache cost its whole capacity)."""
    itemsize = np.dtype(dtype).itemsize
    n = int(np.prod(shape)) * itemsize
    mm = mmap.mmap(-1, max(n, 1))
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        mm.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(mm, dtype, count=n // itemsize).reshape(shape)


class RunState:
    """One sequence's KV cache for `capacity` positions, allocated once. The arrays are zero pages
    until written, so a long capacity costs resident memory only as positions fill. Keys and values
    are float32, or float16 (`cache_type_k` / `cache_type_v` "f16": half the memory; written rounded
    to nearest, read back exactly)."""

    def __init__(self, config: LlamaConfig, capacity: int | None = None,
                 cache_type_k: str = "f32", cache_type_v: str = "f32"):
        cap = config.max_seq_len if capacity is None else capacity
        if not 1 <= cap <= config.max_seq_len:
            raise UsageError(f"a context of {cap} positions is outside 1..{config.max_seq_len} (the model's maximum)")
        self.config = config
        self.capacity = cap
        self.inv_freq = inv_frequencies(config)
        self.cache_type_k = check_cache_type(cache_type_k, "key cache type")
        self.cache_type_v = check_cache_type(cache_type_v, "value cache type")
        shape = (config.n_layers, config.n_kv_heads, cap, config.head_dim)
        self.k = zero_pages(shape, STORAGE[cache_type_k])    # [L, K, S, E]
        self.v = zero_pages(shape, STORAGE[cache_type_v])
        self.pos = 0                           # positions held

    def reserve(self, n_total: int) -> None:
        """Refuse a call that would hold more than `capacity` positions."""
        if n_total > self.capacity:
            raise UsageError(f"context of {n_total} tokens exceeds the limit of {self.capacity}")

    def fork(self) -> "RunState":
        """An independent copy holding the same positions (a shared prefix computed once)."""
        other = RunState(self.config, self.capacity, self.cache_type_k, self.cache_type_v)
        other.k[:, :, : self.pos] = self.k[:, :, : self.pos]
        other.v[:, :, : self.pos] = self.v[:, :, : self.pos]
        other.pos = self.pos
        return other

    def truncate(self, n: int) -> None:
        """Forget positions >= n (later calls overwrite them)."""
        if not 0 <= n <= self.pos:
            raise UsageError(f"cannot truncate a sequence of {self.pos} positions to {n}")
        self.pos = n

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class Activations:
    """Buffers for the rows of one forward call, grown to the largest call seen and then reused."""

    def __init__(self, config: LlamaConfig):
        self.config = config
        self.rows = 0

    def ensure(self, n: int) -> "Activations":
        if n > self.rows:
            c = self.config
            qkv = c.q_dim + 2 * c.kv_dim
            self.x = np.empty((n, c.dim), np.float32)          # residual stream [N, D]
            self.h = np.empty((n, c.dim), np.float32)          # normed input of a block [N, D]
            self.qkv = np.empty((n, qkv), np.float32)          # [N, (H+2K)E]
            self.att = np.empty((n, c.q_dim), np.float32)      # attention output [N, H*E]
            self.proj = np.empty((n, c.dim), np.float32)       # a block's output before the residual [N, D]
            self.gate_up = np.empty((n, 2 * c.ffn_dim), np.float32)
            self.ffn = np.empty((n, c.ffn_dim), np.float32)
            self.rows = n
        return self
