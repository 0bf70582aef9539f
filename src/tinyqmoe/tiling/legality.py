"""Is a band fully permutable (so any tiling and any loop order inside it is legal)?

Rule. A band b_0..b_{n-1} may be tiled, and its loops permuted, when every dependence that
is not already carried by a loop outside the band has a non-negative distance in every
band loop. (Tiling is a permutation of a permutable band, strip-mined; Irigoin & Triolet,
Wolf & Lam.)

How it is checked, exactly. For every pair of accesses to the same array in the band's
statements, at least one a write, source instance x and sink instance y (vectors over
all loops enclosing the statements), we ask a linear system over the rationals whether
      x and y lie in the iteration domain (affine, triangular bounds included),
      the subscripts are equal,
      x runs before y, first differing in band loop p  (x_m = y_m for m < p, x_p < y_p),
      and y_m < x_m for some later band loop m        (a negative distance)
has a solution, for every p and m, with size parameters free (>= 1): the answer holds for
every problem size. Strict inequalities are tightened to integer form (x_p + 1 <= y_p),
equalities with a unit coefficient are substituted, the rest is Fourier-Motzkin
elimination with gcd normalisation. Rational solutions over-approximate integer ones,
so a "feasible" answer may be spurious: the check can refuse a legal band, never accept an
illegal one. Dependences carried by loops outside the band (p before the band) are
satisfied whatever the band does and are skipped; dependences inside one iteration
(x = y) keep their statement order, which tiling does not change.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from tinyqmoe.errors import UsageError
from tinyqmoe.tiling.ir import Affine, Nest

# A constraint is (coeffs, const) meaning  sum coeffs[v] * v + const >= 0.
Constraint = tuple[dict[str, int], int]


def _normalize(coeffs: dict[str, int], const: int) -> Constraint:
    coeffs = {v: c for v, c in coeffs.items() if c}
    if coeffs:
        g = math.gcd(*coeffs.values())
        if g > 1:  # integer tightening: sum (c/g) v >= -const/g  =>  >= ceil(-const/g)
            coeffs = {v: c // g for v, c in coeffs.items()}
            const = math.floor(const / g)
    return coeffs, const


def feasible(inequalities: list[Constraint], equalities: list[Constraint]) -> bool:
    """Does the system have a rational solution? (Fourier-Motzkin.)"""
    eqs = [dict(c) | {"": k} for c, k in equalities]
    ineqs = [dict(c) | {"": k} for c, k in inequalities]
    # Substitute equalities that have a unit coefficient.
    while eqs:
        eq = eqs.pop()
        var = next((v for v, c in eq.items() if v and abs(c) == 1), None)
        if var is None:
            ineqs.append(dict(eq))
            ineqs.append({v: -c for v, c in eq.items()})
            continue
        sign = eq[var]  # var = -sign * (rest)
        rest = {v: -sign * c for v, c in eq.items() if v != var}

        def subst(row):
            c = row.pop(var, 0)
            if c:
                for v, r in rest.items():
                    row[v] = row.get(v, 0) + c * r
            return row
        eqs = [subst(r) for r in eqs]
        ineqs = [subst(r) for r in ineqs]
        for r in eqs:
            if all(not c for v, c in r.items() if v) and r.get("", 0) != 0:
                return False
    rows = set()
    for r in ineqs:
        coeffs, const = _normalize({v: c for v, c in r.items() if v}, r.get("", 0))
        rows.add((tuple(sorted(coeffs.items())), const))
    while True:
        if any(not coeffs and const < 0 for coeffs, const in rows):
            return False
        variables = {v for coeffs, _ in rows for v, _ in coeffs}
        if not variables:
            return True

        def cost(v):
            pos = sum(1 for c, _ in rows if dict(c).get(v, 0) > 0)
            neg = sum(1 for c, _ in rows if dict(c).get(v, 0) < 0)
            return pos * neg - pos - neg
        var = min(sorted(variables), key=cost)
        pos, neg, keep = [], [], set()
        for coeffs, const in rows:
            c = dict(coeffs).get(var, 0)
            if c > 0:
                pos.append((dict(coeffs), const))
            elif c < 0:
                neg.append((dict(coeffs), const))
            else:
                keep.add((coeffs, const))
        for (pc, pk), (nc, nk) in itertools.product(pos, neg):
            a, b = pc[var], -nc[var]
            comb = {v: b * pc.get(v, 0) + a * nc.get(v, 0) for v in set(pc) | set(nc) if v != var}
            coeffs, const = _normalize(comb, b * pk + a * nk)
            keep.add((tuple(sorted(coeffs.items())), const))
        rows = keep


def _domain(nest: Nest, loops: tuple[str, ...], tag: str) -> list[Constraint]:
    """lower <= v <= upper - 1 for each loop, variables renamed v -> v@tag."""
    all_loops = nest.loops()
    out = []

    def ren(expr: Affine) -> dict[str, int]:
        return {(f"{v}@{tag}" if v in all_loops else v): c for v, c in expr.terms}
    for v in loops:
        lp = all_loops[v]
        me = f"{v}@{tag}"
        lo = ren(lp.lower)
        out.append(({me: 1, **{k: -c for k, c in lo.items()}}, -lp.lower.const))
        hi = ren(lp.upper)
        out.append(({**hi, me: hi.get(me, 0) - 1}, lp.upper.const - 1))
    return out


@dataclass(frozen=True)
class Violation:
    array: str
    source: str
    sink: str
    carried_by: str     # band loop where the dependence is carried (x_p < y_p)
    negative_in: str    # band loop with a negative distance

    def __str__(self) -> str:
        return (f"{self.source} -> {self.sink} is carried by {self.carried_by} with a negative "
                f"distance in {self.negative_in}")


def band_violations(nest: Nest, band=None) -> list[Violation]:
    """Dependences that make the band not fully permutable ([] means tiling is legal)."""
    band = tuple(band if band is not None else nest.band)
    chain = nest.band_loops(band)
    loops = nest.enclosing(band[-1])
    start = loops.index(band[0])
    accesses = [a for s in chain[-1].body for a in s.accesses]
    dom = _domain(nest, loops, "x") + _domain(nest, loops, "y")
    dom += [({p: 1}, -1) for p in nest.params]
    found: list[Violation] = []
    seen = set()
    for src, snk in itertools.product(accesses, accesses):
        if src.array != snk.array or not (src.write or snk.write):
            continue
        key = (str(src), str(snk))
        if key in seen:
            continue
        seen.add(key)
        same = []
        for a, b in zip(src.index, snk.index):
            coeffs = {f"{v}@x" if v in loops else v: c for v, c in a.terms}
            for v, c in b.terms:
                k = f"{v}@y" if v in loops else v
                coeffs[k] = coeffs.get(k, 0) - c
            same.append((coeffs, a.const - b.const))
        for p in range(start, len(loops)):
            prefix = [({f"{loops[m]}@x": 1, f"{loops[m]}@y": -1}, 0) for m in range(p)]
            before = [({f"{loops[p]}@y": 1, f"{loops[p]}@x": -1}, -1)]
            if not feasible(dom + before, same + prefix):
                continue
            for m in range(p + 1, len(loops)):
                negative = [({f"{loops[m]}@x": 1, f"{loops[m]}@y": -1}, -1)]
                if feasible(dom + before + negative, same + prefix):
                    found.append(Violation(src.array, str(src), str(snk), loops[p], loops[m]))
    return found


def check_band(nest: Nest, band=None) -> None:
    """Raise UsageError (naming the dependence) unless the band is fully permutable."""
    band = tuple(band if band is not None else nest.band)
    bad = band_violations(nest, band)
    if bad:
        raise UsageError(f"illegal tiling of {nest.name} band ({', '.join(band)}): the band is "
                         f"not fully permutable: {bad[0]}")
