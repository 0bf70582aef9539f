"""Statistics: known answers for Wilson intervals, exact McNemar, bootstrap behaviour."""
import math
from fractions import Fraction

import numpy as np
import pytest

from tinyqmoe.eval import stats


@pytest.mark.parametrize("k,n,lo,hi", [  # Newcombe (1998), Stat. Med. 17:857, Table I, method 3
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe(k, n, lo, hi):
    got = stats.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_stderr_is_sample_sd_over_sqrt_n():
    x = [1, 0, 1, 1, 0]
    assert stats.stderr(x) == pytest.approx(math.sqrt(0.3 / 5))  # var with ddof=1 = 0.3


def test_mcnemar_exact_known_answers():
    # 1 vs 9 discordant pairs: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    a = [1] * 9 + [0] * 1 + [1] * 20   # 20 concordant right
    b = [0] * 9 + [1] * 1 + [1] * 20
    r = stats.mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (9, 1)
    assert r["p_value"] == pytest.approx(22 / 1024, rel=1e-12)
    assert stats.mcnemar_exact([1, 0, 1], [1, 0, 1])["p_value"] == 1.0
    assert stats.mcnemar_exact([1, 0], [0, 1])["p_value"] == 1.0


def test_binom_cdf_half_exact_for_large_n():
    n, k = 3000, 1450
    want = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    assert stats.binom_cdf_half(k, n) == pytest.approx(float(want), rel=1e-12)
    assert 0.02 < stats.binom_cdf_half(k, n) < 0.05  # ~ Phi((1450.5 - 1500) / sqrt(750)) = 0.035


def test_paired_bootstrap_degenerate_and_reproducible():
    a = np.ones(50)
    assert stats.paired_bootstrap(a, a) == {"diff": 0.0, "ci95": [0.0, 0.0], "n": 50}
    assert stats.paired_bootstrap(a, np.zeros(50))["ci95"] == [1.0, 1.0]
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    assert stats.paired_bootstrap(x, y) == stats.paired_bootstrap(x, y)
    with pytest.raises(ValueError):
        stats.paired_bootstrap(x, y[:-1])


def test_paired_bootstrap_width_matches_normal_theory():
    rng = np.random.default_rng(1)
    n = 2000
    base = rng.integers(0, 2, n)
    flip = rng.random(n) < 0.1           # 10% of answers change
    var = np.where(flip, 1 - base, base)
    d = var - base
    r = stats.paired_bootstrap(var, base)
    half = (r["ci95"][1] - r["ci95"][0]) / 2
    assert half == pytest.approx(1.96 * d.std(ddof=1) / math.sqrt(n), rel=0.1)
    assert r["ci95"][0] < r["diff"] < r["ci95"][1]


def test_bootstrap_ci_of_a_mean_covers_it():
    x = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = stats.bootstrap_ci(x)
    assert lo < 0.3 < hi
    w_lo, w_hi = stats.wilson(30, 100)
    assert lo == pytest.approx(w_lo, abs=0.03) and hi == pytest.approx(w_hi, abs=0.03)
