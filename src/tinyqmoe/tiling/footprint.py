"""Data footprint of one tile: distinct array elements touched, as a function of tile sizes.

For a band tiled with sizes T_v, one tile runs each band index v over T_v consecutive values
(outer, untiled indices fixed). An access whose subscript d is  sum_v c_dv * v + k_d  then
covers, along d, at most  span_d + 1  values with  span_d = sum_v |c_dv| * (T_v - 1).
Accesses of one array with the same linear part (same c, different k: A[i] and A[i+1]) are
one group: their union is the box widened by the spread of k along each d. The footprint of
an array is the sum over its groups of  prod_d min(span_d + spread_d + 1, extent_d).

Exact (equal to counting) when every loop index appears in at most one subscript with
coefficient +-1 and the groups of an array touch disjoint elements; otherwise an upper
bound (A[i][k] and A[j][k] in one tile may overlap; 2*i touches every other element).
The same formula evaluates on numpy arrays of tile sizes, which is how selection scans
every candidate at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyqmoe.tiling.ir import Access, Nest, var_ranges


@dataclass(frozen=True)
class Group:
    array: str
    coeffs: tuple[tuple[tuple[str, int], ...], ...]  # per dim: (band var, coeff)
    spread: tuple[int, ...]                           # per dim: max k - min k over the group
    extent: tuple[int, ...]                           # per dim: array extent (caps the span)
    elem_bytes: int
    written: bool


def groups(nest: Nest, params: dict[str, int], band=None) -> list[Group]:
    """Access groups of the band's statements (same array, same linear part)."""
    band = tuple(band if band is not None else nest.band)
    accesses: list[Access] = nest.band_accesses(band)
    keyed: dict[tuple, list[Access]] = {}
    for a in accesses:
        linear = tuple(tuple((v, c) for v, c in sub.terms) for sub in a.index)
        keyed.setdefault((a.array, linear), []).append(a)
    out = []
    for (name, linear), accs in keyed.items():
        arr = nest.array(name)
        extent = tuple(int(params[s]) if s in params else int(s) for s in arr.shape)
        spread = tuple(max(a.index[d].const for a in accs) - min(a.index[d].const for a in accs)
                       for d in range(len(linear)))
        band_coeffs = tuple(tuple((v, c) for v, c in dim if v in band) for dim in linear)
        out.append(Group(name, band_coeffs, spread, extent, arr.elem_bytes,
                         any(a.write for a in accs)))
    return out


def group_elements(g: Group, tiles: dict):
    """Distinct elements of one group in one tile; tiles maps var -> int or numpy array."""
    total = 1
    for d, dim in enumerate(g.coeffs):
        span = g.spread[d]
        for v, c in dim:
            span = span + abs(c) * (tiles[v] - 1)
        total = total * np.minimum(span + 1, g.extent[d])
    return total


def footprint(nest: Nest, tiles: dict[str, int], params: dict[str, int], band=None) -> dict[str, int]:
    """Elements per array touched by one full tile (tile sizes clamped to loop extents)."""
    band = tuple(band if band is not None else nest.band)
    ranges = var_ranges(nest, params)
    clamped = {v: min(int(tiles[v]), ranges[v][1] - ranges[v][0] + 1) for v in band}
    out: dict[str, int] = {}
    for g in groups(nest, params, band):
        out[g.array] = out.get(g.array, 0) + int(group_elements(g, clamped))
    return out


def footprint_bytes(nest: Nest, tiles: dict[str, int], params: dict[str, int], band=None) -> int:
    elems = footprint(nest, tiles, params, band)
    return sum(n * nest.array(a).elem_bytes for a, n in elems.items())


def brute_force_footprint(nest: Nest, params: dict[str, int], box: dict[str, tuple[int, int]],
                          fixed: dict[str, int] | None = None, band=None) -> dict[str, int]:
    """Count distinct elements by running the band over one tile: band var v over
    range(box[v][0], box[v][1]) intersected with its own bounds; outer indices from `fixed`."""
    band = tuple(band if band is not None else nest.band)
    chain = nest.band_loops(band)
    seen: dict[str, set] = {}

    def walk(depth: int, env: dict[str, int]):
        if depth == len(chain):
            for s in chain[-1].body:
                for a in s.accesses:
                    seen.setdefault(a.array, set()).add(tuple(x.evaluate(env) for x in a.index))
            return
        lp = chain[depth]
        lo = max(lp.lower.evaluate(env), box[lp.var][0])
        hi = min(lp.upper.evaluate(env), box[lp.var][1])
        for value in range(lo, hi):
            walk(depth + 1, {**env, lp.var: value})

    walk(0, {**params, **(fixed or {})})
    return {a: len(s) for a, s in seen.items()}
