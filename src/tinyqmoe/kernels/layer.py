"""A whole Llama layer (and a whole model) in one compiled call, for decode and short prompts.

Shape letters as in tinyqmoe.model.config: T tokens (small: decode is 1), D model dim, H query heads,
K kv heads, E head dim, Q = H*E, F ffn dim, S positions the KV cache holds, L layers, V vocab.

Every linear is int8 `q` (O, I) times f32 `scale` (O, G), one scale per I//G inputs; activations stay
f32, so the results equal tinyqmoe.model.forward's up to float rounding. A layer is five parallel
regions (each one fork/join of the numba threads), the small steps fused into them:
  1. qkv rows in (i, i+E/2) pairs, so RoPE and the KV-cache write happen where the pair is computed
  2. attention, one (token, head) per item
  3. output projection rows, residual added in place
  4. gate|up rows in (i, F+i) pairs, SiLU(gate)*up where the pair is computed
  5. down projection rows, residual added in place
The two rmsnorms (D floats each) run on the calling thread between regions.
Like every forward-pass kernel (attention.py, elementwise.py) these use numpy's error model: activations
made non-finite by a forged file give garbage (a 0 softmax sum divides to inf), never a ZeroDivisionError.
"""
import numpy as np
from numba import njit, prange

from tinyqmoe.kernels.elementwise import rmsnorm
from tinyqmoe.kernels.matvec import q8_row_dot


@njit(parallel=True, fastmath=True, cache=True, nogil=True, error_model="numpy")
def layer_q8(x, h, q, att, f, scores,
             attn_norm, wqkv_q, wqkv_s, wo_q, wo_s, ffn_norm, wgu_q, wgu_s, wd_q, wd_s,
             k_cache, v_cache, pos0, cos, sin, eps):
    """One layer, in place on the residual x (T,D) for tokens at positions pos0..pos0+T-1.

    scratch: h (T,D), q (T,Q), att (T,Q), f (T,F), scores (T*H, >= pos0+T)
    weights: attn_norm, ffn_norm (D,); wqkv (Q+2KE, D); wo (D, Q); wgu (2F, D) = [gate | up]; wd (D, F)
    k_cache, v_cache (K,S,E): rows pos0..pos0+T-1 are written; cos, sin (T, E/2) for those positions
    """
    T, D = x.shape
    K, S, E = k_cache.shape
    Q = q.shape[1]
    H = Q // E
    F = f.shape[1]
    half = E // 2
    group = H // K
    inv_sqrt_e = np.float32(1.0 / np.sqrt(E))
    # attention rmsnorm
    rmsnorm(h, x, attn_norm, eps)
    # qkv matmuls in row pairs (i, i+E/2) of one head: RoPE on q and k, then k and v into the cache
    for j in prange((H + 2 * K) * half):
        head = j // half
        r0 = head * E + j % half
        r1 = r0 + half
        i = j % half
        for t in range(T):
            a = q8_row_dot(wqkv_q[r0], wqkv_s[r0], h[t])
            b = q8_row_dot(wqkv_q[r1], wqkv_s[r1], h[t])
            if head < H + K:
                c = cos[t, i]
                s = sin[t, i]
                a, b = a * c - b * s, b * c + a * s
            if head < H:
                q[t, r0] = a
                q[t, r1] = b
            elif head < H + K:
                k_cache[head - H, pos0 + t, i] = a
                k_cache[head - H, pos0 + t, i + half] = b
            else:
                v_cache[head - H - K, pos0 + t, i] = a
                v_cache[head - H - K, pos0 + t, i + half] = b
    # multi-head attention (grouped-query: H/K query heads share a kv head); query t sees 0..pos0+t
    for th in prange(T * H):
        t = th // H
        hd = th % H
        kv = hd // group
        n = pos0 + t + 1
        qo = hd * E
        m = np.float32(-np.inf)
        for p in range(n):
            sc = np.float32(0.0)
            for e in range(E):
                sc += q[t, qo + e] * k_cache[kv, p, e]
            sc *= inv_sqrt_e
            scores[th, p] = sc
            m = max(m, sc)
        total = np.float32(0.0)
        for p in range(n):
            w = np.exp(scores[th, p] - m)
            scores[th, p] = w
            total += w
        inv_total = np.float32(1.0) / total
        for e in range(E):
            att[t, qo + e] = 0.0
        for p in range(n):
            w = scores[th, p] * inv_total
            for e in range(E):
                att[t, qo + e] += w * v_cache[kv, p, e]
    # output projection and residual connection
    for o in prange(D):
        for t in range(T):
            x[t, o] += q8_row_dot(wo_q[o], wo_s[o], att[t])
    # ffn rmsnorm
    rmsnorm(h, x, ffn_norm, eps)
    # SwiGLU: gate row i and up row F+i together, f = silu(gate) * up
    for i in prange(F):
        for t in range(T):
            g = q8_row_dot(wgu_q[i], wgu_s[i], h[t])
            u = q8_row_dot(wgu_q[F + i], wgu_s[F + i], h[t])
            f[t, i] = g / (np.float32(1.0) + np.exp(-g)) * u
    # down projection and residual connection
    for o in prange(D):
        for t in range(T):
            x[t, o] += q8_row_dot(wd_q[o], wd_s[o], f[t])


@njit(parallel=True, fastmath=True, cache=True, nogil=True, error_model="numpy")
def logits_q8(out, x, h, norm, head_q, head_s, eps):
    """final rmsnorm of x (T,D) into h, then the classifier: out (T,V) = (head_q * head_s) @ h"""
    rmsnorm(h, x, norm, eps)
    for v in prange(head_q.shape[0]):
        for t in range(x.shape[0]):
            out[t, v] = q8_row_dot(head_q[v], head_s[v], h[t])


@njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def model_q8(out, x, h, q, att, f, scores,
             attn_norm, wqkv_q, wqkv_s, wo_q, wo_s, ffn_norm, wgu_q, wgu_s, wd_q, wd_s,
             k_cache, v_cache, pos0, cos, sin, eps, norm, head_q, head_s):
    """All L layers, then the logits of every row of x: out (T,V); one call per token.
    The linears' q and scale are tuples of L arrays; attn_norm, ffn_norm (L,D); k/v_cache (L,K,S,E)."""
    for l in range(len(wqkv_q)):
        layer_q8(x, h, q, att, f, scores,
                 attn_norm[l], wqkv_q[l], wqkv_s[l], wo_q[l], wo_s[l], ffn_norm[l], wgu_q[l], wgu_s[l],
                 wd_q[l], wd_s[l], k_cache[l], v_cache[l], pos0, cos, sin, eps)
    logits_q8(out, x, h, norm, head_q, head_s, eps)
