"""The Llama forward pass. Reads top to bottom like the equations.

Shape letters: T tokens in this call, D model dim, H query heads, K kv heads, E head dim,
F ffn dim, V vocab, S positions held in the KV cache.
"""
from __future__ import annotations

import numpy as np

from tinyqmoe.kernels.attention import attention, attention_blas
from tinyqmoe.kernels.elementwise import rmsnorm, rope_rotate_half, silu_mul
from tinyqmoe.model.config import LlamaConfig
from tinyqmoe.model.rope import cos_sin, inv_frequencies
from tinyqmoe.kernels.matvec import SMALL_BATCH


class RunState:
    """The KV cache of one sequence, grown on demand (capacity doubles)."""

    def __init__(self, config: LlamaConfig, capacity: int = 256, limit: int | None = None):
        self.config = config
        self.limit = min(limit or config.max_seq_len, config.max_seq_len)  # most positions it may hold
        self.inv_freq = inv_frequencies(config)
        self.capacity = 0
        self.k: list[np.ndarray] = []  # per layer (K, S, E)
        self.v: list[np.ndarray] = []
        self.pos = 0                   # tokens currently in the cache
        self._grow(capacity)

    def _grow(self, need: int) -> None:
        c = self.config
        if need > self.limit:
            from tinyqmoe.errors import UsageError
            raise UsageError(f"context of {need} tokens exceeds the limit of {self.limit}")
        cap = max(need, min(self.limit, max(16, 2 * self.capacity)))
        shape = (c.n_kv_heads, cap, c.head_dim)
        new_k = [np.zeros(shape, np.float32) for _ in range(c.n_layers)]
        new_v = [np.zeros(shape, np.float32) for _ in range(c.n_layers)]
        for old, new in ((self.k, new_k), (self.v, new_v)):
            for a, b in zip(old, new):
                b[:, : self.pos] = a[:, : self.pos]
        self.k, self.v, self.capacity = new_k, new_v, cap

    def reserve(self, n_total: int) -> None:
        if n_total > self.capacity:
            self._grow(n_total)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)


def forward(weights, state: RunState, tokens, all_logits: bool = False, block_bytes: int = 0) -> np.ndarray:
    """Run `tokens` at positions state.pos.. and return logits: (T, V) if all_logits else (1, V).

    `weights` has .embed, .layers (a sequence, or any object whose `layer(i)` returns a Layer),
    .norm and .lm_head (see tinyqmoe.weights.linear).
    """
    c = state.config
    tokens = np.asarray(tokens, dtype=np.int64)
    T, H, K, E = len(tokens), c.n_heads, c.n_kv_heads, c.head_dim
    pos0 = state.pos
    state.reserve(pos0 + T)
    cos, sin = cos_sin(state.inv_freq, pos0, T)
    get_layer = weights.layer if hasattr(weights, "layer") else weights.layers.__getitem__

    # token embedding
    x = weights.embed.rows(tokens)                                   # [T, D]
    h = np.empty_like(x)
    for l in range(c.n_layers):
        layer = get_layer(l)
        # attention rmsnorm
        rmsnorm(h, x, layer.attn_norm, c.norm_eps)
        # qkv matmuls
        qkv = layer.wqkv(h, block_bytes)                              # [T, (H+2K)E]
        q = np.ascontiguousarray(qkv[:, : H * E]).reshape(T, H, E)
        k = np.ascontiguousarray(qkv[:, H * E: (H + K) * E]).reshape(T, K, E)
        v = qkv[:, (H + K) * E:].reshape(T, K, E)
        # RoPE relative positional encoding: rotate q and k
        rope_rotate_half(q, cos, sin)
        rope_rotate_half(k, cos, sin)
        # key and value at this position into the KV cache
        state.k[l][:, pos0: pos0 + T] = k.transpose(1, 0, 2)
        state.v[l][:, pos0: pos0 + T] = v.transpose(1, 0, 2)
        # multi-head attention (grouped-query: H/K query heads share a kv head)
        att = np.empty((T, H, E), np.float32)
        (attention if T <= SMALL_BATCH else attention_blas)(att, q, state.k[l], state.v[l], pos0)
        # output projection and residual connection
        x += layer.wo(att.reshape(T, H * E), block_bytes)
        # ffn rmsnorm
        rmsnorm(h, x, layer.ffn_norm, c.norm_eps)
        # SwiGLU non-linearity: w_down(silu(w_gate x) * w_up x)
        gate_up = layer.w_gate_up(h, block_bytes)                     # [T, 2F]
        f = np.empty((T, c.ffn_dim), np.float32)
        silu_mul(f, gate_up)
        # residual connection
        x += layer.w_down(f, block_bytes)
    state.pos = pos0 + T

    # final rmsnorm
    last = x if all_logits else x[-1:]
    rmsnorm(last, last, weights.norm, c.norm_eps)  # in place is safe: rms first, then scale
    # classifier into logits
    return weights.lm_head(last, block_bytes)                         # [T or 1, V]
