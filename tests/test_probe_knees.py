"""Knee detection on synthetic latency curves with known answers."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.hw.knees import detect_knees

KIB, MIB = 1 << 10, 1 << 20


def grid(lo=4 * KIB, hi=64 * MIB, per_octave=4):
    n = int(round(math.log2(hi / lo) * per_octave))
    return (lo * 2.0 ** (np.arange(n + 1) / per_octave)).round().astype(np.int64)


def staircase(sizes, steps, ramp_octaves=0.25):
    """Latency 1 up to each step's capacity, then a log-linear ramp over ramp_octaves to the
    next plateau; steps = [(capacity bytes, latency after)]."""
    y = np.zeros(len(sizes))
    prev = 1.0
    for cap, after in steps:
        t = np.clip((np.log2(sizes) - math.log2(cap)) / ramp_octaves, 0.0, 1.0)
        y += t * (math.log(after) - math.log(prev))
        prev = after
    return np.exp(y) * 1.5  # ns


def test_three_sharp_steps_found_exactly():
    sizes = grid()
    lat = staircase(sizes, [(32 * KIB, 4.0), (1 * MIB, 14.0), (16 * MIB, 80.0)])
    assert [k.size for k in detect_knees(sizes, lat)] == [32 * KIB, 1 * MIB, 16 * MIB]


def test_gradual_ramp_knee_at_its_start():
    sizes = grid()
    lat = staircase(sizes, [(64 * KIB, 4.0), (2 * MIB, 30.0)], ramp_octaves=1.0)
    assert [k.size for k in detect_knees(sizes, lat)] == [64 * KIB, 2 * MIB]


def test_flat_curve_has_no_knee():
    sizes = grid()
    assert detect_knees(sizes, np.full(len(sizes), 2.0)) == []


def test_single_outlier_neither_makes_nor_hides_a_knee():
    sizes = grid()
    lat = staircase(sizes, [(32 * KIB, 4.0), (1 * MIB, 14.0)])
    lat[np.searchsorted(sizes, 256 * KIB)] *= 10.0        # a spike on the L2 plateau
    lat[np.searchsorted(sizes, 32 * KIB) + 2] /= 3.0      # a dip right after the L1 knee
    assert [k.size for k in detect_knees(sizes, lat)] == [32 * KIB, 1 * MIB]


def test_transient_rise_that_falls_back_is_not_a_knee():
    sizes = grid()
    lat = staircase(sizes, [(32 * KIB, 4.0)])
    i = np.searchsorted(sizes, 512 * KIB)
    lat[i:i + 2] *= 3.0  # two consecutive high points, then back down
    assert [k.size for k in detect_knees(sizes, lat)] == [32 * KIB]


def test_unmeasured_points_are_skipped_and_indices_refer_to_input():
    sizes = grid()
    lat = staircase(sizes, [(32 * KIB, 4.0), (1 * MIB, 14.0)])
    lat[-10:] = np.nan
    knees = detect_knees(sizes, lat)
    assert [k.size for k in knees] == [32 * KIB, 1 * MIB]
    assert all(sizes[k.index] == k.size for k in knees)
    assert knees[0].rise == pytest.approx(4.0, rel=0.05)


def test_max_knees_keeps_largest_rises():
    sizes = grid()
    lat = staircase(sizes, [(16 * KIB, 1.5), (128 * KIB, 6.0), (2 * MIB, 30.0), (32 * MIB, 200.0)])
    knees = detect_knees(sizes, lat, max_knees=3)
    assert [k.size for k in knees] == [128 * KIB, 2 * MIB, 32 * MIB]


def test_decreasing_sizes_rejected():
    with pytest.raises(ValueError):
        detect_knees([4096, 2048, 8192], [1.0, 2.0, 3.0])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(4, 7), st.floats(1.6, 8.0), st.floats(1.6, 8.0),
       st.integers(0, 2**31 - 1))
def test_noisy_staircase_knees_within_one_grid_step(a, gap, r1, r2, seed):
    """Two steps >= 1 octave apart, +-4% multiplicative noise: each knee is found within one
    grid step (a quarter octave) below its true capacity, never above."""
    sizes = grid()
    c1 = int(sizes[4 * a])
    c2 = int(sizes[4 * a + 4 * gap // 2 + 4])
    lat = staircase(sizes, [(c1, r1), (c2, r1 * r2)])
    lat *= np.random.default_rng(seed).uniform(0.96, 1.04, len(sizes))
    found = [k.size for k in detect_knees(sizes, lat)]
    assert len(found) == 2
    for got, want in zip(found, (c1, c2)):
        assert want / 2 ** 0.25 - 1 <= got <= want


def victim_hierarchy(sizes, l1=32 * KIB, l2=512 * KIB, l3=8 * MIB, ns=(1.2, 4.0, 10.0, 90.0)):
    """Random-access latency over an inclusive L1 -> L2 -> exclusive victim L3 -> DRAM (AMD Zen):
    past the L2 a growing share of the working set lives in L3, so latency climbs gradually."""
    ws = sizes.astype(np.float64)
    in_l2 = np.minimum(1.0, l2 / ws)
    in_cache = np.minimum(1.0, (l2 + l3) / ws)
    beyond_l1 = in_l2 * ns[1] + (in_cache - in_l2) * ns[2] + (1.0 - in_cache) * ns[3]
    return np.where(ws <= l1, ns[0], beyond_l1)


def test_gradual_climb_behind_a_victim_l3_is_the_l2_knee():
    """The AMD failure: a climb past the L2 that reaches 1.3x only an octave later was skipped,
    and the L3 share's knee (~2.5 MB) reported as L2."""
    sizes = grid()
    knees = [k.size for k in detect_knees(sizes, victim_hierarchy(sizes))]
    assert knees[:2] == [32 * KIB, 512 * KIB]
    assert len(knees) < 3 or knees[2] >= 4 * MIB


def test_a_blip_an_octave_before_the_knee_is_not_a_knee():
    sizes = grid()
    lat = staircase(sizes, [(32 * KIB, 4.0), (1 * MIB, 14.0)])
    i = np.searchsorted(sizes, 512 * KIB)
    lat[i:i + 2] *= 1.25  # noise just below the real knee: falls back before it
    assert [k.size for k in detect_knees(sizes, lat)] == [32 * KIB, 1 * MIB]
