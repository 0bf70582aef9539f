"""The fused decode path: the arguments of kernels.layer.model_q8 gathered once, scratch allocated once.

`FusedDecode(weights, config)` takes resident quantized weights (a WeightSource whose `layer(i)`
linears hold `.q` int8 (O, I), or `.p` packed 4-bit (O, I/2), and `.kscale` f32 (O, G) scales, or (O, 2, G)
scales and offsets (uint4: kernels/rowdot.py), with a
quantized LM head: weights/resident.py).
`run(states, token_lists)` appends token_lists[i] at states[i].pos of each RunState (k, v: (L,K,S,E))
in one compiled call for all of them (the server's decode step: one token per sequence; a short prompt:
one sequence, several tokens) and returns each sequence's float32 logits. A row's logits never depend on
the other rows of the call (kernels/rowdot.py). model/forward.py stays the reference it is tested
against (tests/test_kernels_layer.py).
"""
from __future__ import annotations

import numpy as np

from tinyqmoe.kernels.half import kernel_view
from tinyqmoe.kernels.layer import model_q8
from tinyqmoe.kernels.rowdot import fits
from tinyqmoe.kernels.rowdot_a16 import takes_a16

LINEARS = ("wqkv", "wo", "w_gate_up", "w_down")


def _rows(linear):
    """int8 rows, or packed 4-bit rows (two inputs a byte), of a resident quantized linear"""
    return getattr(linear, "rows_int", None)


def _kscale(linear):
    """the scales as the row kernels take them: (O, G), or (O, 2, G) with offsets"""
    return getattr(linear, "kscale", None)


def _fits(linear) -> bool:
    q, scale = _rows(linear), _kscale(linear)
    if q is None or scale is None or q.ndim != 2 or q.dtype not in (np.int8, np.uint8):
        return False
    n_in = q.shape[1] * (2 if q.dtype == np.uint8 else 1)
    return (q.flags.c_contiguous and scale.dtype == np.float32 and scale.flags.c_contiguous
            and fits(n_in, n_in // scale.shape[-1]))


def _takes_a16(linear) -> bool:
    q, scale = _rows(linear), _kscale(linear)
    return scale.ndim == 2 and takes_a16(q.shape[1] * (2 if q.dtype == np.uint8 else 1), scale.shape[1])


def supports(weights) -> bool:
    """Can FusedDecode run these weights? (every linear resident int8 or packed 4-bit, the LM head too,
    each kind of linear the same in every layer (rows' dtype, offsets or not), rows and scale groups of
    whole 32-input blocks: kernels/rowdot.py)"""
    layers = getattr(weights, "layers", None)
    if layers is None or not _fits(weights.lm_head):
        return False
    return all(_fits(getattr(l, name)) for l in layers for name in LINEARS) and all(
        len({(_rows(getattr(l, name)).dtype, _kscale(getattr(l, name)).ndim) for l in layers}) == 1
        for name in LINEARS)


class FusedDecode:
    """Tuples of the per-layer int8 arrays (views, no copies), stacked norms, activation scratch."""

    def __init__(self, weights, config):
        if not supports(weights):
            from tinyqmoe.errors import UsageError
            raise UsageError("the fused decode path runs resident int8 weights (int8 LM head included) "
                             "whose rows and scale groups are multiples of 32 inputs")
        self.config = c = config
        self.weights = weights
        layers = list(weights.layers)
        self.attn_norm = np.stack([l.attn_norm for l in layers]).astype(np.float32)   # [L, D]
        self.ffn_norm = np.stack([l.ffn_norm for l in layers]).astype(np.float32)     # [L, D]
        self.linears = tuple(tuple(_rows(getattr(l, name)) if part == "q" else _kscale(getattr(l, name))
                                   for l in layers)
                             for name in LINEARS for part in ("q", "scale"))
        self.norm = np.ascontiguousarray(weights.norm, dtype=np.float32)
        # every row multiplies int16 tokens (kernels/rowdot_a16.py: A16 host, one scale a row): then a
        # 32-token prompt chunk costs less here, beside the decoding rows, than alone in the int8 GEMM
        self.int16_tokens = all(_takes_a16(getattr(l, name)) for l in layers for name in LINEARS) and _takes_a16(
            weights.lm_head)
        self.rows = 0
        self.out = np.empty((0, config.vocab_size), np.float32)         # [J, V]: the rows whose logits are asked
        self.scores = np.empty((0, 0), np.float32)

    def _scratch(self, T: int, S: int) -> None:
        c = self.config
        if T > self.rows:
            self.rows = T
            self.h = np.empty((T, c.dim), np.float32)                   # [T, D]
            self.q = np.empty((T, c.q_dim), np.float32)                 # [T, H*E]
            self.att = np.empty((T, c.q_dim), np.float32)               # [T, H*E]
            self.f = np.empty((T, c.ffn_dim), np.float32)               # [T, F]
            self.tmp = np.empty((T, max(c.q_dim + 2 * c.kv_dim, c.ffn_dim)), np.float32)
        if self.scores.shape[0] < T * c.n_heads or self.scores.shape[1] < S:
            self.scores = np.empty((self.rows * c.n_heads, max(S, 2 * self.scores.shape[1])), np.float32)

    def step(self, state, tokens) -> np.ndarray:
        """Run `tokens` at state.pos.. of one sequence: logits (T,V) of every row (a view of scratch)."""
        return self.run([state], [tokens], all_logits=True, copy=False)[0]

    def run(self, states, token_lists, all_logits: bool = False, copy: bool = True) -> list[np.ndarray]:
        """Append token_lists[i] at states[i].pos for every i in one call: per sequence (T_i, V) logits
        if all_logits else (1, V) of its last row; copies unless copy=False (then views of scratch,
        valid until the next call)."""
        c = self.config
        if len({id(s) for s in states}) != len(states):
            from tinyqmoe.errors import UsageError
            raise UsageError("a sequence appears twice in one fused call")
        toks = [np.asarray(t, dtype=np.int64).reshape(-1) for t in token_lists]
        lens = np.array([len(t) for t in toks], dtype=np.int64)
        T = int(lens.sum())
        seq = np.repeat(np.arange(len(states), dtype=np.int64), lens)
        pos = np.concatenate([np.arange(s.pos, s.pos + n, dtype=np.int64) for s, n in zip(states, lens)])
        for s, n in zip(states, lens):
            s.reserve(s.pos + int(n))
            if (s.k.dtype, s.v.dtype) != (states[0].k.dtype, states[0].v.dtype) or not (
                    s.k.flags.c_contiguous and s.v.flags.c_contiguous):   # RunState makes them so
                raise ValueError("the caches of one fused call must be C-contiguous and of one type")
        ends = np.cumsum(lens)
        head_rows = np.arange(T, dtype=np.int64) if all_logits else ends - 1
        self._scratch(T, int(pos.max()) + 1)
        # the caches' addresses: `states` holds the arrays for the duration of the call
        k_addr = np.array([s.k.ctypes.data for s in states], dtype=np.int64)
        v_addr = np.array([s.v.ctypes.data for s in states], dtype=np.int64)
        cap = np.array([s.k.shape[2] for s in states], dtype=np.int64)
        angles = pos.astype(np.float32)[:, None] * states[0].inv_freq[None, :]
        x = np.ascontiguousarray(self.weights.embed_rows(np.concatenate(toks)), dtype=np.float32)   # [T, D]
        qkv_q, qkv_s, wo_q, wo_s, gu_q, gu_s, wd_q, wd_s = self.linears
        if len(head_rows) > len(self.out):
            self.out = np.empty((len(head_rows), c.vocab_size), np.float32)
        out = self.out[:len(head_rows)]
        model_q8(out, x, self.h[:T], self.q[:T], self.att[:T], self.f[:T], self.tmp[:T], self.scores,
                 self.attn_norm, qkv_q, qkv_s, wo_q, wo_s, self.ffn_norm, gu_q, gu_s, wd_q, wd_s,
                 k_addr, v_addr, cap, seq, pos, _like(states[0].k), _like(states[0].v),
                 np.cos(angles), np.sin(angles), np.float32(c.norm_eps),
                 self.norm, _rows(self.weights.lm_head), _kscale(self.weights.lm_head), head_rows)
        for s, n in zip(states, lens):
            s.pos += int(n)
        if all_logits:
            starts = ends - lens
            parts = [out[a:b] for a, b in zip(starts, ends)]
        else:
            parts = [out[i:i + 1] for i in range(len(states))]
        return [p.copy() for p in parts] if copy else parts


def _like(cache: np.ndarray) -> np.ndarray:
    """An empty array of the element type the kernels see for `cache` (float32, or uint16 for f16)."""
    return np.empty(0, kernel_view(cache).dtype)
