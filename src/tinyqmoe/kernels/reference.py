"""Plain-numpy references of the numba kernels: same contracts, written for clarity, not speed."""
import numpy as np


def matmul_q8(q, scale, x):
    """(q (O,I) int8 * scale (O,G)) @ x (T,I)^T -> (T,O)"""
    O, I = q.shape
    G = scale.shape[1]
    w = (q.reshape(O, G, I // G).astype(np.float64) * scale[:, :, None]).reshape(O, I)
    return (x.astype(np.float64) @ w.T).astype(np.float32)


def rmsnorm(x, w, eps):
    x = x.astype(np.float64)
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w).astype(np.float32)


def silu_mul(gate_up):
    g, u = np.split(gate_up.astype(np.float64), 2, axis=-1)
    return (g / (1 + np.exp(-g)) * u).astype(np.float32)


def rope_rotate_half(x, cos, sin):
    """x (T,N,E), cos/sin (T,E/2) -> rotated copy"""
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1).astype(np.float32)


def attention(q, k_cache, v_cache, pos0):
    """q (T,H,E), k/v_cache (K,S,E) -> (T,H,E); query t sees keys 0..pos0+t"""
    T, H, E = q.shape
    K = k_cache.shape[0]
    out = np.zeros((T, H, E))
    for t in range(T):
        n = pos0 + t + 1
        for h in range(H):
            kv = h // (H // K)
            s = k_cache[kv, :n].astype(np.float64) @ q[t, h] / np.sqrt(E)
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ v_cache[kv, :n]
    return out.astype(np.float32)


def quantize_rows_i8(x, G):
    """x (T,I) -> (xq (T,I) int8, xs (T,G)): symmetric per token and group, xs = max|x| / 127"""
    T, I = x.shape
    xg = x.reshape(T, G, I // G).astype(np.float64)
    m = np.abs(xg).max(axis=2)
    xs = np.where(m > 0, m / 127, 1.0)
    xq = np.rint(xg / xs[:, :, None]).astype(np.int8).reshape(T, I)
    return xq, xs.astype(np.float32)


def gemm_q8q8(wq, ws, xq, xs):
    """(wq (O,I) int8 * ws (O,G)) @ (xq (T,I) int8 * xs (T,GX))^T -> (T,O); GX activation blocks"""
    T, I = xq.shape
    G = xs.shape[1]
    x = (xq.reshape(T, G, I // G).astype(np.float64) * xs[:, :, None]).reshape(T, I)
    return matmul_q8(wq, ws, x)


def unpack_q4(p):
    """packed 4-bit rows (O, I/2) uint8, column 2j in the low nibble of byte j -> int8 (O, I)"""
    lo = (p & 15).astype(np.int8)
    hi = (p >> 4).astype(np.int8)
    out = np.stack([lo, hi], axis=-1).reshape(p.shape[0], 2 * p.shape[1])
    return np.where(out >= 8, out - 16, out).astype(np.int8)


def matmul_q4(p, scale, x):
    """(p (O,I/2) packed 4-bit * scale (O,G)) @ x (T,I)^T -> (T,O)"""
    return matmul_q8(unpack_q4(p), scale, x)
