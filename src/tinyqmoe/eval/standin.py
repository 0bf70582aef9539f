"""STAND-IN (delete when the multi-sequence interface of issue 10 lands on main).

`multi_sequence(model)` returns the model itself when it has `forward_batch`; otherwise a thin
wrapper over today's engine with the interface of docs COMMON (model/state.py, model/forward.py):

    state = m.new_state(); state.pos; state.fork(); state.truncate(n)
    m.forward_batch(states, token_lists, all_logits=False, path="stream" | "auto")

The batched forward stacks the rows of all sequences for the linears (one pass over the weights)
and runs attention and the KV cache per sequence, as model/forward.py does for one sequence.
path="stream" keeps the per-row streaming kernels (matvec, numba attention) whatever the row count.
"""
from __future__ import annotations

import contextlib

import numpy as np


def multi_sequence(model):
    return model if hasattr(model, "forward_batch") else _MultiSequence(model)


class _State:
    """Today's RunState with fork() and truncate()."""

    def __init__(self, run_state):
        self.rs = run_state

    @property
    def pos(self) -> int:
        return self.rs.pos

    def fork(self) -> "_State":
        """A new cache with room for what it holds plus some, holding a copy of its positions."""
        old = self.rs
        rs = type(old)(old.config, min(old.limit, max(old.pos + 64, 16)), limit=old.limit)
        for src, dst in ((old.k, rs.k), (old.v, rs.v)):
            for a, b in zip(src, dst):
                b[:, : old.pos] = a[:, : old.pos]
        rs.pos = old.pos
        return _State(rs)

    def truncate(self, n: int) -> None:
        if not 0 <= n <= self.rs.pos:
            raise ValueError(f"truncate({n}) outside 0..{self.rs.pos}")
        self.rs.pos = n


@contextlib.contextmanager
def _streaming_kernels(enabled: bool):
    """Today's engine picks BLAS above SMALL_BATCH rows; raise the threshold for path="stream"."""
    from tinyqmoe.model import forward as fwd
    from tinyqmoe.model import weights as w
    saved = (w.SMALL_BATCH, fwd.SMALL_BATCH)
    if enabled:
        w.SMALL_BATCH = fwd.SMALL_BATCH = 1 << 30
    try:
        yield
    finally:
        w.SMALL_BATCH, fwd.SMALL_BATCH = saved


class _MultiSequence:
    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def new_state(self, capacity: int = 256) -> _State:
        return _State(self.model.new_state(capacity))

    def forward_batch(self, states, token_lists, all_logits: bool = False, path: str = "auto"):
        from tinyqmoe.kernels.attention import attention, attention_blas
        from tinyqmoe.kernels.elementwise import rmsnorm, rope_rotate_half, silu_mul
        from tinyqmoe.model.rope import cos_sin

        m = self.model
        weights, bb = m.weights, m.block_bytes
        c = m.config
        H, K, E = c.n_heads, c.n_kv_heads, c.head_dim
        lens = [len(t) for t in token_lists]
        offs = np.concatenate([[0], np.cumsum(lens)]).astype(int)
        T = int(offs[-1])
        tokens = np.concatenate([np.asarray(t, dtype=np.int64) for t in token_lists])
        rss = [s.rs for s in states]
        for rs, n in zip(rss, lens):
            rs.reserve(rs.pos + n)
        rot = [cos_sin(rs.inv_freq, rs.pos, n) for rs, n in zip(rss, lens)]
        stream = path == "stream"
        get_layer = weights.layer if hasattr(weights, "layer") else weights.layers.__getitem__
        with _streaming_kernels(stream):
            x = weights.embed.rows(tokens)
            h = np.empty_like(x)
            for layer_i in range(c.n_layers):
                layer = get_layer(layer_i)
                rmsnorm(h, x, layer.attn_norm, c.norm_eps)
                qkv = layer.wqkv(h, bb)
                att = np.empty((T, H, E), np.float32)
                for i, rs in enumerate(rss):
                    a, b, n = offs[i], offs[i + 1], lens[i]
                    q = np.ascontiguousarray(qkv[a:b, : H * E]).reshape(n, H, E)
                    k = np.ascontiguousarray(qkv[a:b, H * E: (H + K) * E]).reshape(n, K, E)
                    v = qkv[a:b, (H + K) * E:].reshape(n, K, E)
                    rope_rotate_half(q, *rot[i])
                    rope_rotate_half(k, *rot[i])
                    rs.k[layer_i][:, rs.pos: rs.pos + n] = k.transpose(1, 0, 2)
                    rs.v[layer_i][:, rs.pos: rs.pos + n] = v.transpose(1, 0, 2)
                    out = np.empty((n, H, E), np.float32)
                    kernel = attention if (stream or n <= 16) else attention_blas
                    kernel(out, q, rs.k[layer_i], rs.v[layer_i], rs.pos)
                    att[a:b] = out
                x += layer.wo(att.reshape(T, H * E), bb)
                rmsnorm(h, x, layer.ffn_norm, c.norm_eps)
                gate_up = layer.w_gate_up(h, bb)
                f = np.empty((T, c.ffn_dim), np.float32)
                silu_mul(f, gate_up)
                x += layer.w_down(f, bb)
            for rs, n in zip(rss, lens):
                rs.pos += n
            rows = x if all_logits else x[offs[1:] - 1]
            rows = np.ascontiguousarray(rows)
            rmsnorm(rows, rows, weights.norm, c.norm_eps)
            logits = weights.lm_head(rows, bb)
        if all_logits:
            return [logits[offs[i]:offs[i + 1]] for i in range(len(lens))]
        return [logits[i:i + 1] for i in range(len(lens))]
