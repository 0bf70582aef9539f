"""Causal grouped-query attention over a KV cache."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def attention(out, q, k_cache, v_cache, pos0):
    """q (T,H,E) at positions pos0..pos0+T-1, k/v_cache (K,S,E) -> out (T,H,E); query t sees keys 0..pos0+t"""
    T, H, E = q.shape
    K = k_cache.shape[0]
    group = H // K
    scale = np.float32(1.0 / np.sqrt(E))
    for th in prange(T * H):
        t = th // H
        h = th % H
        kv = h // group
        n = pos0 + t + 1
        scores = np.empty(n, np.float32)
        m = np.float32(-np.inf)
        for p in range(n):
            s = np.float32(0.0)
            for e in range(E):
                s += q[t, h, e] * k_cache[kv, p, e]
            s *= scale
            scores[p] = s
            m = max(m, s)
        total = np.float32(0.0)
        for p in range(n):
            scores[p] = np.exp(scores[p] - m)
            total += scores[p]
        for e in range(E):
            out[t, h, e] = 0.0
        for p in range(n):
            w = scores[p] / total
            for e in range(E):
                out[t, h, e] += w * v_cache[kv, p, e]
