"""Statistics for accuracies: intervals for one proportion, tests for paired differences.

  wilson(k, n)            95% Wilson score interval of a proportion (Newcombe 1998, method 3)
  stderr(x)               lm-eval's acc_stderr: sample standard deviation / sqrt(n)
  bootstrap_ci(x)         percentile bootstrap of a mean
  paired_bootstrap(a, b)  mean(a - b) with a percentile bootstrap CI, resampling questions
  mcnemar_exact(a, b)     exact two-sided McNemar test on the discordant pairs

Bootstraps use a fixed seed, so a report is reproducible to the last digit.
"""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)
    return (min(lo, p), max(hi, p))


def stderr(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def _resample_means(x: np.ndarray, iters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(x)
    means = np.empty(iters)
    for start in range(0, iters, 1000):  # blocks keep memory at 1000 x n indices
        idx = rng.integers(0, n, size=(min(1000, iters - start), n))
        means[start:start + len(idx)] = x[idx].mean(axis=1)
    return means


def bootstrap_ci(x, iters: int = 10000, seed: int = 1234, level: float = 0.95) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    means = _resample_means(x, iters, seed)
    a = (1 - level) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def paired_bootstrap(a, b, iters: int = 10000, seed: int = 1234, level: float = 0.95) -> dict:
    """Difference of means of paired per-question scores a - b, with its bootstrap CI."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    d = a - b
    lo, hi = bootstrap_ci(d, iters, seed, level)
    return {"diff": float(d.mean()) if len(d) else float("nan"), "ci95": [lo, hi], "n": int(len(d))}


def binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact (integer arithmetic)."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / (1 << n)


def mcnemar_exact(a, b) -> dict:
    """Exact McNemar test for paired 0/1 outcomes: b01 = a wrong & b right, b10 = a right & b wrong.

    Under H0 (same accuracy) the discordant pairs split as Binomial(b01 + b10, 1/2);
    p = min(1, 2 P(X <= min(b01, b10))).
    """
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    b10 = int(np.sum(a & ~b))
    b01 = int(np.sum(~a & b))
    n = b01 + b10
    p = 1.0 if n == 0 else min(1.0, 2 * binom_cdf_half(min(b01, b10), n))
    return {"a_only": b10, "b_only": b01, "p_value": p}
