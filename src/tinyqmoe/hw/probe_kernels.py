"""Compiled timing loops of the cache probe, each beside a plain-Python reference.

buf is int64, one 64-byte cache line = 8 slots. The first slot of each visited line holds
the slot index of the next line of one random order (write_random_chain), so every load's
address comes from the previous load: loads cannot overlap, no prefetcher can guess the
next line, and time per access is the latency. (A Python-level loop costs ~70 ns per
access and would measure the interpreter, so both walks run compiled.)
"""
from __future__ import annotations

import numpy as np
from numba import njit

SLOTS_PER_LINE = 8  # 64-byte lines of int64


@njit(cache=True)
def triangular_walk(buf, rounds, lo, hi, start):
    """buf [8*L] int64 chain -> last slot reached. Triangular nest, `rounds` times: outer i
    over [lo, hi), inner j over [0, i) walks the first i lines of the chain from `start`.
    Between two uses of a line the walk touches the i-1 other lines of the prefix: reuse
    distance = working set, swept as i grows (the paper's triangular loop)."""
    p = start
    for _ in range(rounds):
        for i in range(lo, hi):
            p = start
            for _j in range(i):
                p = buf[p]
    return p


def triangular_walk_ref(buf, rounds, lo, hi, start):
    p = start
    for _ in range(rounds):
        for i in range(lo, hi):
            p = start
            for _j in range(i):
                p = int(buf[p])
    return p


@njit(cache=True)
def pointer_chase(buf, start, hops):
    """buf [8*L] int64 cyclic chain -> the slot reached after `hops` dependent loads."""
    p = start
    for _ in range(hops):
        p = buf[p]
    return p


def pointer_chase_ref(buf, start, hops):
    p = start
    for _ in range(hops):
        p = int(buf[p])
    return p


@njit(cache=True)
def link_chain(buf, order):
    """buf [8*L] int64, order [L] a permutation of 0..L-1 -> first slot of each line
    order[t] points to line order[t+1], the last back to order[0]."""
    n = order.shape[0]
    for t in range(n - 1):
        buf[order[t] * 8] = order[t + 1] * 8
    buf[order[n - 1] * 8] = order[0] * 8


def link_chain_ref(buf, order):
    nxt = np.roll(order, -1)
    buf[order * SLOTS_PER_LINE] = nxt * SLOTS_PER_LINE


def write_random_chain(buf: np.ndarray, n_lines: int, rng: np.random.Generator) -> int:
    """Link the first n_lines lines in one random order, the last back to the first (a
    random cyclic permutation). Returns the slot of the first line: a walk of i hops from it
    touches a random i-line prefix; a walk of n_lines hops visits every line once."""
    order = rng.permutation(n_lines)
    link_chain(buf, order)
    return int(order[0]) * SLOTS_PER_LINE
