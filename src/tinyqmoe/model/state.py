"""The state of a run, allocated once (as llama2.c's RunState): one sequence's KV cache, and the
activation buffers the forward pass reuses from token to token.

Shape letters: L layers, K kv heads, S positions, E head dim, D model dim, N rows in one call.
"""
from __future__ import annotations

import mmap

import numpy as np

from tinyqmoe.errors import UsageError
from tinyqmoe.model.config import LlamaConfig
from tinyqmoe.model.rope import inv_frequencies


def zero_pages(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of zeros whose pages become resident only when written: anonymous memory with
    transparent huge pages refused (numpy asks for them on large arrays, and one 2 MB page per
    [layer, kv head] row would make the first position of a KV cache cost its whole capacity)."""
    n = int(np.prod(shape)) * 4
    mm = mmap.mmap(-1, max(n, 1))
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        mm.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(mm, np.float32, count=n // 4).reshape(shape)


class RunState:
    """One sequence's KV cache for `capacity` positions, allocated once. The arrays are zero pages
    until written, so a long capacity costs resident memory only as positions fill."""

    def __init__(self, config: LlamaConfig, capacity: int | None = None):
        cap = config.max_seq_len if capacity is None else capacity
        if not 1 <= cap <= config.max_seq_len:
            raise UsageError(f"a context of {cap} positions is outside 1..{config.max_seq_len} (the model's maximum)")
        self.config = config
        self.capacity = cap
        self.inv_freq = inv_frequencies(config)
        shape = (config.n_layers, config.n_kv_heads, cap, config.head_dim)
        self.k = zero_pages(shape)             # [L, K, S, E]
        self.v = zero_pages(shape)
        self.pos = 0                           # positions held

    def reserve(self, n_total: int) -> None:
        """Refuse a call that would hold more than `capacity` positions."""
        if n_total > self.capacity:
            raise UsageError(f"context of {n_total} tokens exceeds the limit of {self.capacity}")

    def fork(self) -> "RunState":
        """An independent copy holding the same positions (a shared prefix computed once)."""
        other = RunState(self.config, self.capacity)
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
