"""Causal grouped-query attention over a KV cache (float32, or f16 as uint16 bits: kernels/half.py)."""
import numpy as np
from numba import njit, prange

from tinyqmoe.kernels.half import to_f32


@njit(parallel=True, fastmath=True, cache=True, nogil=True, error_model="numpy")
def attention(out, q, k_cache, v_cache, pos0):
    """q (T,H,E) at positions pos0..pos0+T-1, k/v_cache (K,S,E) -> out (T,H,E); query t sees keys 0..pos0+t.
    A cache is float32, or uint16 holding float16 bits (half.kernel_view)."""
    T, H, E = q.shape
    K = k_cache.shape[0]
    group = H // K
    scale = np.float32(1.0 / np.sqrt(E))
    for th in prange(T * H):
        t = th // H
        h = th % H
        keys = k_cache[h // group]          # (S, E): 1-D rows and a fresh accumulator vectorize (kernels/layer.py)
        values = v_cache[h // group]
        qr = q[t, h]
        n = pos0 + t + 1
        scores = np.empty(n, np.float32)
        m = np.float32(-np.inf)
        for p in range(n):
            kr = keys[p]
            s = np.float32(0.0)
            for e in range(E):
                s += qr[e] * to_f32(kr[e])
            s *= scale
            scores[p] = s
            m = max(m, s)
        total = np.float32(0.0)
        for p in range(n):
            scores[p] = np.exp(scores[p] - m)
            total += scores[p]
        acc = np.zeros(E, np.float32)
        for p in range(n):
            w = scores[p] / total
            vr = values[p]
            for e in range(E):
                acc[e] += w * to_f32(vr[e])
        out[t, h] = acc


def attention_blas(out, q, k_cache, v_cache, pos0):
    """Same contract as `attention`, as batched matrix products (numpy/BLAS): for prefill, T > 1.
    The caches as numpy holds them (float32 or float16; float16 is widened to float32 here)."""
    T, H, E = q.shape
    K = k_cache.shape[0]
    g = H // K
    S = pos0 + T
    qg = q.reshape(T, K, g, E).transpose(1, 2, 0, 3).reshape(K, g * T, E)      # [K, g*T, E]
    keys = k_cache[:, :S].astype(np.float32, copy=False)
    values = v_cache[:, :S].astype(np.float32, copy=False)
    scores = np.matmul(qg, keys.transpose(0, 2, 1))                              # [K, g*T, S]
    scores *= np.float32(1.0 / np.sqrt(E))
    causal = np.arange(S)[None, :] > (pos0 + np.arange(T))[:, None]             # [T, S] future keys
    scores.reshape(K, g, T, S)[:, :, causal] = -np.inf
    scores -= scores.max(axis=2, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=2, keepdims=True)
    o = np.matmul(scores, values)                                                 # [K, g*T, E]
    out[:] = o.reshape(K, g, T, E).transpose(2, 0, 1, 3).reshape(T, H, E)
