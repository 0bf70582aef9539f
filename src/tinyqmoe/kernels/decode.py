"""The fused decode path: the arguments of kernels.layer.model_q8 gathered once, scratch allocated once.

`FusedDecode(weights, config)` takes resident int8 weights (a WeightSource whose `layer(i)` linears
hold `.q` int8 (O, I) and `.scale` f32 (O, G), with an int8 LM head: weights/resident.py);
`step(state, tokens)` appends `tokens` at state.pos of a RunState (k, v: (L,K,S,E)) and returns
float32 (T,V) logits, with one compiled call for the whole model. model/forward.py stays the
reference it is tested against (tests/test_kernels_layer.py).
"""
from __future__ import annotations

import numpy as np

from tinyqmoe.kernels.layer import model_q8

LINEARS = ("wqkv", "wo", "w_gate_up", "w_down")


def supports(weights) -> bool:
    """Can FusedDecode run these weights? (every linear resident int8, the LM head too)"""
    layers = getattr(weights, "layers", None)
    if layers is None or getattr(weights.lm_head, "q", None) is None:
        return False
    return all(getattr(getattr(l, name), "q", None) is not None for l in layers for name in LINEARS)


class FusedDecode:
    """Tuples of the per-layer int8 arrays (views, no copies), stacked norms, activation scratch."""

    def __init__(self, weights, config):
        if not supports(weights):
            from tinyqmoe.errors import UsageError
            raise UsageError("the fused decode path runs resident int8 weights (int8 LM head included)")
        self.config = c = config
        self.weights = weights
        layers = list(weights.layers)
        self.attn_norm = np.stack([l.attn_norm for l in layers]).astype(np.float32)   # [L, D]
        self.ffn_norm = np.stack([l.ffn_norm for l in layers]).astype(np.float32)     # [L, D]
        self.linears = tuple(tuple(getattr(getattr(l, name), part) for l in layers)
                             for name in LINEARS for part in ("q", "scale"))
        self.norm = np.ascontiguousarray(weights.norm, dtype=np.float32)
        self.rows = 0
        self.scores = np.empty((0, 0), np.float32)

    def _scratch(self, T: int, S: int) -> None:
        c = self.config
        if T > self.rows:
            self.rows = T
            self.h = np.empty((T, c.dim), np.float32)                   # [T, D]
            self.q = np.empty((T, c.q_dim), np.float32)                 # [T, H*E]
            self.att = np.empty((T, c.q_dim), np.float32)               # [T, H*E]
            self.f = np.empty((T, c.ffn_dim), np.float32)               # [T, F]
            self.out = np.empty((T, c.vocab_size), np.float32)          # [T, V]
        if self.scores.shape[0] < T * c.n_heads or self.scores.shape[1] < S:
            self.scores = np.empty((self.rows * c.n_heads, max(S, 2 * self.scores.shape[1])), np.float32)

    def step(self, state, tokens) -> np.ndarray:
        """Run `tokens` at state.pos.. through all layers: logits (T,V), a view of reused scratch."""
        c = self.config
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        T, pos0 = len(tokens), state.pos
        state.reserve(pos0 + T)
        self._scratch(T, pos0 + T)
        angles = np.arange(pos0, pos0 + T, dtype=np.float32)[:, None] * state.inv_freq[None, :]
        x = np.ascontiguousarray(self.weights.embed_rows(tokens), dtype=np.float32)   # [T, D]
        qkv_q, qkv_s, wo_q, wo_s, gu_q, gu_s, wd_q, wd_s = self.linears
        out = self.out[:T]
        model_q8(out, x, self.h[:T], self.q[:T], self.att[:T], self.f[:T], self.scores,
                 self.attn_norm, qkv_q, qkv_s, wo_q, wo_s, self.ffn_norm, gu_q, gu_s, wd_q, wd_s,
                 state.k, state.v, pos0, np.cos(angles), np.sin(angles), np.float32(c.norm_eps),
                 self.norm, self.weights.lm_head.q, self.weights.lm_head.scale)
        state.pos = pos0 + T
        return out
