"""Knees of a latency-vs-working-set curve: where latency rises sharply and stays up.

A pure function on (sizes, latencies), tested on synthetic curves with known answers.
In log-log space (x = log2 size, y = ln latency):
  1. smooth y with a running median of 3 (one noisy point cannot make or hide a knee);
  2. slope of each interval between neighbours, per octave;
  3. an interval k -> k+1 is steep when its slope >= min_slope AND the rise persists: the
     smoothed y stays above y[k] + ln(min_step) over the octave after point k, and
     >= y[k] + ln(min_rise) over the octave after that (a bump that falls back is not a cache
     boundary). Looking one octave further lets a gradual climb count: behind an exclusive
     victim L3 (AMD Zen) latency rises slowly past the L2, as a growing share of the working
     set spills to L3, and reaches min_rise only an octave or more after the knee;
  4. steep intervals less than one octave apart are one transition; its knee is the left
     point of its first steep interval: the largest working set measured before latency
     starts to climb, so knees under-estimate capacity rather than over-estimate it;
  5. more than max_knees transitions: keep those with the largest persisted rise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Knee:
    size: int              # bytes: last working set before the jump
    index: int             # its index in the input arrays
    latency_before: float  # smoothed latency at `size`
    latency_after: float   # lowest smoothed latency over the octave after it
    slope: float           # ln-latency per octave of the interval after `size`

    @property
    def rise(self) -> float:
        return self.latency_after / self.latency_before


def median3(y: np.ndarray) -> np.ndarray:
    out = y.copy()
    if len(y) >= 3:
        out[1:-1] = np.median(np.stack([y[:-2], y[1:-1], y[2:]]), axis=0)
    return out


def detect_knees(sizes, latencies, *, min_rise: float = 1.3, min_slope: float = 0.5,
                 max_knees: int = 3, min_step: float = 1.15) -> list[Knee]:
    """sizes [n] bytes (increasing), latencies [n] (> 0; NaN = not measured) -> knees by size."""
    sizes = np.asarray(sizes, dtype=np.float64)
    lat = np.asarray(latencies, dtype=np.float64)
    keep = np.isfinite(lat) & (lat > 0)
    sizes, lat, where = sizes[keep], lat[keep], np.flatnonzero(keep)
    if len(sizes) < 3:
        return []
    if np.any(np.diff(sizes) <= 0):
        raise ValueError("sizes must increase")
    x = np.log2(sizes)
    y = np.log(median3(lat))
    slope = np.diff(y) / np.diff(x)
    steep = []
    for k in range(len(slope)):
        if slope[k] < min_slope:
            continue
        near = y[(x > x[k]) & (x <= x[k] + 1.0 + 1e-9)]
        far = y[(x >= x[k] + 1.0 - 1e-9) & (x <= x[k] + 2.0 + 1e-9)]
        if far.size == 0:  # within an octave of the top of the grid: what there is
            far = near
        persisted = float(np.min(far)) - y[k]
        if float(np.min(near)) - y[k] >= math.log(min_step) and persisted >= math.log(min_rise):
            steep.append((k, persisted))
    groups: list[list[tuple[int, float]]] = []
    for k, persisted in steep:
        if groups and x[k] - x[groups[-1][-1][0]] < 1.0:
            groups[-1].append((k, persisted))
        else:
            groups.append([(k, persisted)])
    knees = []
    for group in groups:
        k = group[0][0]
        rise = max(p for _, p in group)
        knees.append((rise, k))
    knees = sorted(sorted(knees, reverse=True)[:max_knees], key=lambda t: t[1])
    lin = np.exp(y)
    return [Knee(size=int(sizes[k]), index=int(where[k]), latency_before=float(lin[k]),
                 latency_after=float(lin[k] * math.exp(rise)), slope=float(slope[k]))
            for rise, k in knees]
