"""Tile-size selection: the inner tile's footprint fits a measured cache level.

Given a nest, its problem sizes and the probe's cache sizes:
  1. loop order: the band keeps its order, except that the loop best for the innermost
     position moves there: the one that indexes the last (contiguous) subscript of the most
     accesses, and never a reduction loop (one the written array does not depend on: its
     iterations cannot be vectorized without reassociating sums);
  2. candidates: per band loop, sizes 2^a and 3*2^a up to its extent, and the extent;
  3. every combination is scored at once (numpy broadcasting over the candidate grid):
       footprint F(T) = sum over access groups of distinct elements * element bytes
       traffic   Q(T) = sum over groups of F_g(T) * (2 if written) * number of times the
                 group's tile is loaded = product of tile counts N_m / T_m of the loops
                 from the outermost down to the deepest loop the group's subscripts use
                 (a tile stays in cache while only loops it does not depend on advance)
                 + loop overhead: one cache line per entry into the innermost point loop
  4. two capacity constraints, one per level: the whole tile's footprint F(T) <= fraction *
     capacity(level) (default half the probe's L2), and the inner tile's, the data one
     iteration of the outermost point loop touches (F with that loop's size set to 1), <=
     inner_fraction * L1 (default 0.75): for gemm in (i, k, j) order that inner tile is
     A[i, k-tile] + the B tile + C[i, j-tile], and keeping it in L1 is what makes the
     B tile's reuse across i pay (an L2-only fit picked 64x128x384 tiles that ran 0.83x of
     the autotuned 32x32x128 on gemm LARGE). Among the combinations that fit both, pick
     the least Q(T) (ties: larger tiles); if none fits, the smallest footprint.
  5. strided inner loops: when the innermost loop walks a non-contiguous subscript with a
     stride >= 4 KiB (syrk's A[j, k] with j innermost), each iteration touches a new page;
     the pages one run of the innermost loop touches through such accesses are capped at
     TLB_PAGES = 32, half of the 64-entry L1 DTLB usual on x86 cores (an assumption, not
     probed): syrk LARGE ran 0.59 s with j=32 vs 0.84 s with j=128 at equal footprints.
"""
from __future__ import annotations

import time

import numpy as np

from tinyqmoe.errors import UsageError
from tinyqmoe.tiling.footprint import group_elements, groups
from tinyqmoe.tiling.ir import Nest, var_ranges
from tinyqmoe.tiling.plan import TilePlan

LINE_BYTES = 64
PAGE_BYTES = 4096
TLB_PAGES = 32


def strided_inner_groups(g_list, inner: str) -> int:
    """Number of access groups whose innermost-loop subscript is not the contiguous one and
    whose stride along it is >= one page."""
    count = 0
    for g in g_list:
        dims = [d for d, dim in enumerate(g.coeffs) if any(v == inner for v, _ in dim)]
        if not dims or dims == [len(g.coeffs) - 1]:
            continue
        d = min(dims)
        stride = g.elem_bytes
        for e in g.extent[d + 1:]:
            stride *= e
        if stride >= PAGE_BYTES:
            count += 1
    return count


def choose_order(nest: Nest, band: tuple[str, ...]) -> tuple[str, ...]:
    """Band order with the best innermost loop moved inside (if bounds allow)."""
    accesses = nest.band_accesses(band)
    written = [a for a in accesses if a.write]
    loops = {lp.var: lp for lp in nest.band_loops(band)}

    def score(v):
        if not any(sub.coeff(v) for a in written for sub in a.index):
            return -1000  # reduction loop
        s = 0
        for a in accesses:
            dims = [d for d, sub in enumerate(a.index) if sub.coeff(v)]
            if dims == [len(a.index) - 1] and abs(a.index[-1].coeff(v)) == 1:
                s += 1
            elif dims:
                s -= 1
        return s
    best = max(band, key=lambda v: (score(v), band.index(v)))
    order = tuple(v for v in band if v != best) + (best,)
    # bounds may only use loops outside them
    for idx, v in enumerate(order):
        deps = set(loops[v].lower.vars + loops[v].upper.vars) & set(band)
        if not deps <= set(order[:idx]):
            return band
    return order


def candidates(extent: int) -> np.ndarray:
    sizes = {extent}
    a = 1
    while a < extent:
        sizes.add(a)
        if 3 * a // 2 < extent and a >= 2:
            sizes.add(3 * a // 2)
        a *= 2
    return np.array(sorted(s for s in sizes if s >= min(4, extent)), dtype=np.int64)


def select_tiles(nest: Nest, params: dict[str, int], cache, level: str = "L2",
                 fraction: float = 0.5, band=None, inner_fraction: float = 0.75) -> TilePlan:
    """TilePlan for the nest's band; cache is a tinyqmoe.hw.CacheSizes."""
    t0 = time.perf_counter()
    band = tuple(band if band is not None else nest.band)
    capacity = {"L1": cache.l1, "L2": cache.l2, "L3": cache.l3}.get(level)
    if not capacity:
        raise UsageError(f"no {level} size known for tile selection (cache sizes: {cache})")
    budget = fraction * capacity
    order = choose_order(nest, band)
    ranges = var_ranges(nest, params)
    extent = {v: ranges[v][1] - ranges[v][0] + 1 for v in band}
    n = len(order)
    grids = {}
    for axis, v in enumerate(order):
        shape = [1] * n
        shape[axis] = -1
        grids[v] = candidates(extent[v]).reshape(shape)
    counts = {v: extent[v] / grids[v] for v in order}  # edge tiles carry less data: no ceil
    fp = 0.0
    inner = 0.0
    traffic = 0.0
    inner_grids = dict(grids) | {order[0]: 1}
    g_list = groups(nest, params, band)
    strided = strided_inner_groups(g_list, order[-1])
    for g in g_list:
        elems = group_elements(g, grids) * g.elem_bytes
        fp = fp + elems
        inner = inner + group_elements(g, inner_grids) * g.elem_bytes
        used = {v for dim in g.coeffs for v, _ in dim}
        depth = max((order.index(v) for v in used), default=-1)
        loads = 1.0
        for v in order[: depth + 1]:
            loads = loads * counts[v]
        traffic = traffic + elems * loads * (2 if g.written else 1)
    inner_entries = np.prod([extent[v] for v in order]) / grids[order[-1]]
    cost = traffic + LINE_BYTES * inner_entries
    fp = np.broadcast_to(fp, np.broadcast_shapes(*(g.shape for g in grids.values())))
    cost = np.broadcast_to(cost, fp.shape)
    volume = np.ones(fp.shape)
    for v in order:
        volume = volume * grids[v]
    fits = (fp <= budget) & (np.broadcast_to(inner, fp.shape) <= inner_fraction * cache.l1)
    if level == "L1":
        fits = fp <= budget
    if strided:
        fits = fits & np.broadcast_to(strided * grids[order[-1]] <= TLB_PAGES, fp.shape)
    if fits.any():
        key = np.where(fits, cost, np.inf)
        best = np.flatnonzero(key == key.min())
        pick = best[np.argmax(volume.ravel()[best])]
    else:
        pick = int(np.argmin(fp))
    idx = np.unravel_index(pick, fp.shape)
    tiles = {v: int(grids[v].ravel()[idx[axis]]) for axis, v in enumerate(order)}
    seconds = time.perf_counter() - t0
    return TilePlan(nest.name, band, order, tuple((v, tiles[v]) for v in band),
                    footprint_bytes=int(fp[idx]), capacity_bytes=int(budget), level=level,
                    seconds=seconds)
