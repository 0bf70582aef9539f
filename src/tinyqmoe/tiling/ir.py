"""A small representation of affine loop nests.

    Affine   c0 + sum c_v * v over loop indices and size parameters (integers)
    Access   array[sub_0, sub_1, ...], each subscript Affine; read or write
    Stmt     one Python statement (the code numba compiles) + the accesses it makes
    Loop     for var in range(lower, upper): body   (bounds Affine, upper exclusive;
             triangular bounds such as range(i + 1, M) are affine in outer indices)
    Nest     a tree of Loops (a perfectly nested band may be tiled), its arrays with
             element sizes, its scalars and size parameters

Loop variables are unique inside a nest. Bands are chains of loops each of whose body is
exactly the next loop, the last holding statements only.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Affine:
    terms: tuple[tuple[str, int], ...] = ()   # sorted (var, coeff), coeff != 0
    const: int = 0

    @staticmethod
    def of(coeffs: dict[str, int], const: int = 0) -> "Affine":
        return Affine(tuple(sorted((v, c) for v, c in coeffs.items() if c)), int(const))

    def coeff(self, var: str) -> int:
        return dict(self.terms).get(var, 0)

    @property
    def vars(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.terms)

    def evaluate(self, env: dict[str, int]) -> int:
        return self.const + sum(c * env[v] for v, c in self.terms)

    def __add__(self, other: "Affine") -> "Affine":
        d = dict(self.terms)
        for v, c in other.terms:
            d[v] = d.get(v, 0) + c
        return Affine.of(d, self.const + other.const)

    def scale(self, k: int) -> "Affine":
        return Affine.of({v: c * k for v, c in self.terms}, self.const * k)

    def source(self, rename: dict[str, str] | None = None) -> str:
        """Python source for this expression."""
        rename = rename or {}
        parts = []
        for v, c in self.terms:
            name = rename.get(v, v)
            term = name if abs(c) == 1 else f"{abs(c)} * {name}"
            parts.append(("- " if c < 0 else "+ ") + term)
        if self.const or not parts:
            parts.append(("- " if self.const < 0 else "+ ") + str(abs(self.const)))
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else "-" + text[2:]

    def __str__(self) -> str:
        return self.source()


def aff(text: str | int) -> Affine:
    """Parse 'i + 1', 'N - 1', '2*i - k', 7 into an Affine (raises ValueError if not affine)."""
    if isinstance(text, int):
        return Affine.of({}, text)

    def walk(node) -> Affine:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Affine.of({}, node.value)
        if isinstance(node, ast.Name):
            return Affine.of({node.id: 1})
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return walk(node.operand).scale(-1)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            right = walk(node.right)
            return walk(node.left) + (right if isinstance(node.op, ast.Add) else right.scale(-1))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = walk(node.left), walk(node.right)
            if not left.terms:
                return right.scale(left.const)
            if not right.terms:
                return left.scale(right.const)
        raise ValueError(f"not affine: {text!r}")

    return walk(ast.parse(str(text), mode="eval").body)


@dataclass(frozen=True)
class Access:
    array: str
    index: tuple[Affine, ...]
    write: bool = False

    def __str__(self) -> str:
        return f"{self.array}[{', '.join(map(str, self.index))}]{' (w)' if self.write else ''}"


def access(text: str, write: bool = False) -> Access:
    """access('A[i, k + 1]') -> Access('A', (i, k+1))."""
    node = ast.parse(text, mode="eval").body
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)):
        raise ValueError(f"not an array access: {text!r}")
    sl = node.slice
    elems = sl.elts if isinstance(sl, ast.Tuple) else [sl]
    return Access(node.value.id, tuple(aff(ast.unparse(e)) for e in elems), write)


@dataclass(frozen=True)
class Stmt:
    code: str                      # a Python statement over arrays, scalars, loop indices
    accesses: tuple[Access, ...]   # every array element it reads or writes


def stmt(code: str, writes: list[str], reads: list[str]) -> Stmt:
    return Stmt(code, tuple([access(w, True) for w in writes] + [access(r) for r in reads]))


@dataclass(frozen=True)
class Loop:
    var: str
    lower: Affine
    upper: Affine                  # exclusive
    body: tuple[Union["Loop", Stmt], ...]


def loop(var: str, lower, upper, *body) -> Loop:
    return Loop(var, aff(lower), aff(upper), tuple(body))


@dataclass(frozen=True)
class Array:
    name: str
    shape: tuple[str, ...]         # size parameters or integers as text
    elem_bytes: int = 8


@dataclass(frozen=True)
class Nest:
    name: str
    root: Loop
    arrays: tuple[Array, ...]
    params: tuple[str, ...]
    scalars: tuple[str, ...] = ()
    band: tuple[str, ...] | None = None   # the loops to tile (a perfect chain), None: none

    def array(self, name: str) -> Array:
        for a in self.arrays:
            if a.name == name:
                return a
        raise KeyError(name)

    def loops(self) -> dict[str, Loop]:
        out: dict[str, Loop] = {}

        def walk(node):
            if isinstance(node, Loop):
                if node.var in out:
                    raise ValueError(f"{self.name}: loop variable {node.var} used twice")
                out[node.var] = node
                for child in node.body:
                    walk(child)
        walk(self.root)
        return out

    def enclosing(self, var: str) -> tuple[str, ...]:
        """Loop variables from the root down to `var` inclusive."""
        def walk(node, path):
            if isinstance(node, Loop):
                path = path + (node.var,)
                if node.var == var:
                    return path
                for child in node.body:
                    found = walk(child, path)
                    if found:
                        return found
            return None
        found = walk(self.root, ())
        if found is None:
            raise KeyError(var)
        return found

    def band_loops(self, band: tuple[str, ...] | None = None) -> list[Loop]:
        """The loops of a band, checked to be a perfect chain ending in statements."""
        band = tuple(band if band is not None else (self.band or ()))
        if not band:
            raise ValueError(f"{self.name}: no band")
        loops = self.loops()
        chain = [loops[v] for v in band]
        for outer, inner in zip(chain, chain[1:]):
            if outer.body != (inner,):
                raise ValueError(f"{self.name}: band {band} is not a perfect nest at {outer.var}")
        if not all(isinstance(s, Stmt) for s in chain[-1].body):
            raise ValueError(f"{self.name}: innermost band loop {band[-1]} must hold statements only")
        return chain

    def band_accesses(self, band=None) -> list[Access]:
        return [a for s in self.band_loops(band)[-1].body for a in s.accesses]


def var_ranges(nest: Nest, params: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Inclusive [min, max] of every loop variable (interval arithmetic over the bounds)."""
    ranges: dict[str, tuple[int, int]] = {}

    def extreme(expr: Affine, want_min: bool) -> int:
        total = expr.const
        for v, c in expr.terms:
            lo, hi = (params[v], params[v]) if v in params else ranges[v]
            total += c * (lo if (c > 0) == want_min else hi)
        return total

    def walk(node):
        if isinstance(node, Loop):
            lo = extreme(node.lower, True)
            hi = extreme(node.upper, False) - 1
            ranges[node.var] = (lo, max(lo, hi))
            for child in node.body:
                walk(child)
    walk(nest.root)
    return ranges
