"""The Llama forward pass. Reads top to bottom like the equations.

One call advances several sequences at once (a batch of one is the common case): the linears see the
rows of every sequence stacked, so each weight is read once per call; RoPE, the KV cache and
attention are per sequence, at each sequence's own position.

Shape letters: N rows in this call (all sequences), T a sequence's rows, D model dim, H query heads,
K kv heads, E head dim, F ffn dim, V vocab, S positions held in a KV cache.
"""
from __future__ import annotations

import numpy as np

from tinyqmoe.kernels.attention import attention, attention_blas
from tinyqmoe.kernels.elementwise import rmsnorm, rope_rotate_half, silu_mul, silu_mul_rows
from tinyqmoe.kernels.half import kernel_view
from tinyqmoe.kernels.matvec import SMALL_BATCH
from tinyqmoe.model.rope import cos_sin
from tinyqmoe.model.state import Activations, RunState

PATHS = ("auto", "stream", "blocked")


def forward_batch(weights, states: list[RunState], tokens: list, rt, acts: Activations | None = None,
                  all_logits: bool = False, path: str = "auto") -> list[np.ndarray]:
    """Run tokens[i] at positions states[i].pos.. for every sequence i; logits per sequence:
    (T_i, V) if all_logits else (1, V) for its last token.

    `weights` is a WeightSource (weights/source.py); `rt` the Runtime (threads, pool, block size).
    path="stream": per-row streaming kernels whatever N, so a row's result never depends on the
    other rows of the batch; "blocked": blocked BLAS products; "auto": stream up to 16 rows.
    """
    c = states[0].config
    H, K, E = c.n_heads, c.n_kv_heads, c.head_dim
    toks = [np.asarray(t, dtype=np.int64).reshape(-1) for t in tokens]
    lens = [len(t) for t in toks]
    starts = np.concatenate([[0], np.cumsum(lens)]).astype(int)
    N = int(starts[-1])
    stream = _streams(path, N)
    for st, T in zip(states, lens):
        st.reserve(st.pos + T)
    rope = [cos_sin(st.inv_freq, st.pos, T) for st, T in zip(states, lens)]
    a = (acts or Activations(c)).ensure(N)
    x, h, qkv, att = a.x[:N], a.h[:N], a.qkv[:N], a.att[:N]
    proj, gate_up, ffn = a.proj[:N], a.gate_up[:N], a.ffn[:N]

    # token embedding
    x[:] = weights.embed_rows(np.concatenate(toks))                   # [N, D]
    for l in range(c.n_layers):
        layer = weights.layer(l)
        # attention rmsnorm
        rmsnorm(h, x, layer.attn_norm, c.norm_eps)
        # qkv matmuls
        layer.wqkv(h, rt, qkv, stream)                                 # [N, (H+2K)E]
        for st, (cos, sin), r0, T in zip(states, rope, starts, lens):
            q = np.ascontiguousarray(qkv[r0:r0 + T, : H * E]).reshape(T, H, E)
            k = np.ascontiguousarray(qkv[r0:r0 + T, H * E: (H + K) * E]).reshape(T, K, E)
            v = qkv[r0:r0 + T, (H + K) * E:].reshape(T, K, E)
            # RoPE relative positional encoding: rotate q and k
            rope_rotate_half(q, cos, sin)
            rope_rotate_half(k, cos, sin)
            # key and value at these positions into the sequence's KV cache (float32, or rounded to f16)
            p0 = st.pos
            st.k[l, :, p0: p0 + T] = k.transpose(1, 0, 2)
            st.v[l, :, p0: p0 + T] = v.transpose(1, 0, 2)
            # multi-head attention (grouped-query: H/K query heads share a kv head)
            # (the loops skip the masked future keys, best while the new rows are most of the cache;
            # products win once a longer cache is read for few rows: benchmarks/engine_kernels.py)
            if stream or T <= SMALL_BATCH or p0 <= T:
                attention(att[r0:r0 + T].reshape(T, H, E), q, kernel_view(st.k[l]), kernel_view(st.v[l]), p0)
            else:
                attention_blas(att[r0:r0 + T].reshape(T, H, E), q, st.k[l], st.v[l], p0, rt)
        # output projection and residual connection
        x += layer.wo(att, rt, proj, stream)
        # ffn rmsnorm
        rmsnorm(h, x, layer.ffn_norm, c.norm_eps)
        # SwiGLU non-linearity: w_down(silu(w_gate x) * w_up x)
        layer.w_gate_up(h, rt, gate_up, stream)                        # [N, 2F]
        (silu_mul if stream else silu_mul_rows)(ffn, gate_up)
        # residual connection
        x += layer.w_down(ffn, rt, proj, stream)
    for st, T in zip(states, lens):
        st.pos += T

    # final rmsnorm, on the rows whose logits are asked for
    rows = np.arange(N) if all_logits else starts[1:] - 1
    last = np.ascontiguousarray(x[rows])
    rmsnorm(last, last, weights.norm, c.norm_eps)  # in place is safe: rms first, then scale
    # classifier into logits
    logits = weights.lm_head(last, rt, None, _streams(path, len(rows)))
    if not all_logits:
        return [logits[i:i + 1] for i in range(len(states))]
    return [logits[r0:r0 + T] for r0, T in zip(starts, lens)]


def _streams(path: str, rows: int) -> bool:
    if path not in PATHS:
        from tinyqmoe.errors import UsageError
        raise UsageError(f"unknown arithmetic path {path!r} (choose {', '.join(PATHS)})")
    return path == "stream" or (path == "auto" and rows <= SMALL_BATCH)


def forward(weights, state: RunState, tokens, rt=None, all_logits: bool = False, path: str = "auto",
            acts: Activations | None = None) -> np.ndarray:
    """One sequence: logits (T, V) if all_logits else (1, V)."""
    from tinyqmoe.runtime import SERIAL

    return forward_batch(weights, [state], [tokens], rt or SERIAL, acts, all_logits, path)[0]
