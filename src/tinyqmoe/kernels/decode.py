"""The fused decode path: the arguments of kernels.layer.model_q8 gathered once, scratch allocated once.

`FusedDecode(weights, config)` takes int8 engine weights (objects with .embed, .layers[i].wqkv.q /
.scale ..., .norm, .lm_head, as tinyqmoe.model.weights builds them); `step(state, tokens)` appends
`tokens` at state.pos (a RunState: per-layer k/v lists of (K,S,E) arrays) and returns float32 (T,V)
logits, with one compiled call for the whole model. tinyqmoe.model.forward stays the reference.
"""
from __future__ import annotations

import numpy as np

from tinyqmoe.kernels.layer import model_q8


def _cos_sin(inv_freq: np.ndarray, pos0: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, E/2) cos and sin for positions pos0 .. pos0+T-1 (as tinyqmoe.model.rope.cos_sin)."""
    angles = np.arange(pos0, pos0 + T, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.cos(angles), np.sin(angles)


class FusedDecode:
    """Holds tuples of the per-layer int8 arrays (views, no copies) and the activation scratch."""

    def __init__(self, weights, config, max_tokens: int = 1):
        layers = list(weights.layers)
        for lin in ("wqkv", "wo", "w_gate_up", "w_down"):
            if any(getattr(l, lin).q is None for l in layers):
                raise ValueError("the fused decode path runs int8 weights")
        if weights.lm_head.q is None:
            raise ValueError("the fused decode path needs an int8 LM head")
        c = self.config = config
        self.weights = weights
        self.attn_norm = np.stack([l.attn_norm for l in layers]).astype(np.float32)
        self.ffn_norm = np.stack([l.ffn_norm for l in layers]).astype(np.float32)
        self.lin = tuple(tuple(getattr(getattr(l, lin), part) for l in layers)
                         for lin in ("wqkv", "wo", "w_gate_up", "w_down") for part in ("q", "scale"))
        self.norm = np.ascontiguousarray(weights.norm, dtype=np.float32)
        self.max_tokens = 0
        self._scratch(max_tokens, 16)

    def _scratch(self, T: int, S: int) -> None:
        c = self.config
        if T > self.max_tokens:
            self.max_tokens = T
            self.h = np.empty((T, c.dim), np.float32)
            self.q = np.empty((T, c.n_heads * c.head_dim), np.float32)
            self.att = np.empty((T, c.n_heads * c.head_dim), np.float32)
            self.f = np.empty((T, c.ffn_dim), np.float32)
            self.out = np.empty((T, c.vocab_size), np.float32)
            self.scores = np.empty((T * c.n_heads, 0), np.float32)
        if S > self.scores.shape[1] or self.scores.shape[0] < T * c.n_heads:
            self.scores = np.empty((self.max_tokens * c.n_heads, max(S, 2 * self.scores.shape[1])), np.float32)

    def step(self, state, tokens) -> np.ndarray:
        """Run `tokens` at state.pos.. through all layers; logits (T,V), a view of scratch."""
        c = self.config
        tokens = np.asarray(tokens, dtype=np.int64)
        T, pos0 = len(tokens), state.pos
        state.reserve(pos0 + T)
        self._scratch(T, pos0 + T)
        cos, sin = _cos_sin(state.inv_freq, pos0, T)
        x = self.weights.embed.rows(tokens)                                         # [T, D]
        qkv_q, qkv_s, wo_q, wo_s, gu_q, gu_s, wd_q, wd_s = self.lin
        out = self.out[:T]
        model_q8(out, x, self.h[:T], self.q[:T], self.att[:T], self.f[:T], self.scores,
                 self.attn_norm, qkv_q, qkv_s, wo_q, wo_s, self.ffn_norm, gu_q, gu_s, wd_q, wd_s,
                 tuple(state.k), tuple(state.v), pos0, cos, sin, np.float32(c.norm_eps),
                 self.norm, self.weights.lm_head.q, self.weights.lm_head.scale)
        state.pos = pos0 + T
        return out
