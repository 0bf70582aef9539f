"""Causal grouped-query attention over a KV cache (float32, or f16 as uint16 bits: kernels/half.py)."""
import numpy as np
from numba import njit, prange

from tinyqmoe.kernels.half import to_f32
from tinyqmoe.kernels.fastexp import exp_f32


@njit(parallel=True, fastmath=True, cache=True, nogil=True, error_model="numpy")
def attention(out, q, k_cache, v_cache, pos0):
    """q (T,H,E) at positions pos0..pos0+T-1, k/v_cache (K,S,E) -> out (T,H,E); query t sees keys 0..pos0+t.
    A cache is float32, or uint16 holding float16 bits (half.kernel_view)."""
    T, H, E = q.shape
    K = k_cache.shape[0]
    group = H // K
    scale = np.float32(1.0 / np.sqrt(E))
    for i in prange(K * T):
        # one kv head and query position at a time, its `group` query heads together: the keys and values
        # stream once for all of them; kv head major, so one thread's consecutive iterations share them
        kh = i // T
        t = i % T
        keys = k_cache[kh]                  # (S, E): 1-D rows and fresh accumulators vectorize (kernels/layer.py)
        values = v_cache[kh]
        n = pos0 + t + 1
        scores = np.empty((group, n), np.float32)
        for p in range(n):
            kr = keys[p]
            for j in range(group):
                qr = q[t, kh * group + j]
                s = np.float32(0.0)
                for e in range(E):
                    s += qr[e] * to_f32(kr[e])
                scores[j, p] = s * scale
        for j in range(group):
            sr = scores[j]
            m = np.float32(-np.inf)
            for p in range(n):
                m = max(m, sr[p])
            total = np.float32(0.0)
            for p in range(n):
                sr[p] = exp_f32(sr[p] - m)
                total += sr[p]
            inv = np.float32(1.0) / total
            for p in range(n):
                sr[p] *= inv
        acc = np.zeros((group, E), np.float32)
        for p in range(n):
            vr = values[p]
            for j in range(group):
                w = scores[j, p]
                a = acc[j]
                for e in range(E):
                    a[e] += w * to_f32(vr[e])
        for j in range(group):
            out[t, kh * group + j] = acc[j]


QUERY_SLICE = 64   # queries per task of attention_blas


def attention_blas(out, q, k_cache, v_cache, pos0, rt=None):
    """Same contract as `attention`, as matrix products (numpy/BLAS): for prefill, T > 1. The caches as
    numpy holds them (float32 or float16; float16 is widened to float32 here).

    One task per kv head and slice of QUERY_SLICE queries, on the runtime's pool if `rt` is given. The
    slices depend on T alone, not on the threads, so the result does too (BLAS rounds a row in its last
    bits differently in products of different heights: ~1e-7 relative)."""
    T, H, E = q.shape
    K = k_cache.shape[0]
    S = pos0 + T
    keys = k_cache[:, :S].astype(np.float32, copy=False)
    values = v_cache[:, :S].astype(np.float32, copy=False)
    tasks = [(kh, t0, min(T, t0 + QUERY_SLICE)) for kh in range(K) for t0 in range(0, T, QUERY_SLICE)]

    def task(job):
        kh, t0, t1 = job
        _attend(out[t0:t1], q[t0:t1], keys[kh], values[kh], kh, H // K, pos0 + t0, E)

    if rt is not None:          # serial when it has one thread
        rt.map(task, tasks)
    else:
        for job in tasks:
            task(job)


def _attend(out, q, keys, values, kh, g, pos0, E):
    """Query heads kh*g .. kh*g+g-1 of q (T, H, E) at positions pos0.. against one kv head's keys and
    values (S, E) -> their columns of out (T, H, E). Every query scores all S keys, the future ones
    masked to -inf (so a slice's rows are those of one product over all queries)."""
    T = q.shape[0]
    S = keys.shape[0]
    heads = slice(kh * g, (kh + 1) * g)
    qg = q[:, heads].transpose(1, 0, 2).reshape(g * T, E)                      # [g*T, E]
    scores = qg @ keys.T                                                         # [g*T, S]
    scores *= np.float32(1.0 / np.sqrt(E))
    causal = np.arange(S)[None, :] > (pos0 + np.arange(T))[:, None]             # [T, S] future keys
    scores.reshape(g, T, S)[:, causal] = -np.inf
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    out[:, heads] = (scores @ values).reshape(g, T, E).transpose(1, 0, 2)
