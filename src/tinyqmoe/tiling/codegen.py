"""Generate a tiled loop nest as Python source with the tile sizes as constants, compile it
with numba, and check that the innermost loop still vectorizes.

Tile sizes are literals in the source: with tile sizes as runtime arguments the inner loop
of gemm stopped vectorizing and ran ~4x slower (FACTS.md). The module is written to
$TINYQMOE_CACHE/tiling/gen_<hash>.py and imported from there, so numba's cache=True keeps
the compiled code across processes.

For a band b_1..b_n, TilePlan order o_1..o_n and sizes T:
    for o_1_t in range(floor(lo_1 / T) * T, hi_1, T):         # tile loops, in `order`
      ...
        for o_1 in range(max(o_1_t, lo(o_1)), min(o_1_t + T, hi(o_1))):   # point loops
          ...
            <statements>
Tile-loop bounds take each bound's extreme over the tiles already open (an index with
coefficient c > 0 contributes its tile start to a lower bound, its tile end to an upper
bound, and conversely), so every point of a triangular domain lies in some visited tile;
point-loop bounds are the exact original bounds clipped to the tile. Tiles at the edges
(sizes that do not divide the extent) are clipped the same way.

Subscripts are cast to uint64 in the generated statements: numba wraps negative indices
(`if j < 0: j += n`), and when a loop starts at a runtime value (a tile start) LLVM cannot
prove the index non-negative, keeps the wrap-around select, and does not vectorize (gemm
tiled with constant sizes ran 3x slower than untiled until the casts). Valid subscripts are
never negative, so the cast changes no result.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from tinyqmoe.errors import UsageError
from tinyqmoe.tiling.ir import Affine, Loop, Nest, Stmt
from tinyqmoe.tiling.plan import TilePlan

IND = "    "


def _extreme(expr: Affine, want_min: bool, band: set[str], open_tiles: tuple[str, ...],
             tiles: dict[str, int], what: str) -> str:
    rename = {}
    for v, c in expr.terms:
        if v not in band:
            continue
        if v not in open_tiles:
            raise UsageError(f"loop order puts {what} before {v}, which its bound depends on")
        low_end = (c > 0) == want_min
        rename[v] = f"{v}_t" if low_end else f"({v}_t + {tiles[v] - 1})"
    return expr.source(rename)


def band_lines(chain: list[Loop], plan: TilePlan, depth: int) -> tuple[list[str], int]:
    loops = {lp.var: lp for lp in chain}
    band = set(plan.band)
    tiles = plan.tile
    lines = []
    for idx, v in enumerate(plan.order):
        lp, t = loops[v], tiles[v]
        lo = _extreme(lp.lower, True, band, plan.order[:idx], tiles, v)
        hi = _extreme(lp.upper, False, band, plan.order[:idx], tiles, v)
        start = f"(({lo}) // {t}) * {t}" if lp.lower.terms or lp.lower.const else "0"
        lines.append(f"{IND * depth}for {v}_t in range({start}, {hi}, {t}):")
        depth += 1
    for idx, v in enumerate(plan.order):
        lp, t = loops[v], tiles[v]
        for u in lp.lower.vars + lp.upper.vars:
            if u in band and u not in plan.order[:idx]:
                raise UsageError(f"loop order puts {v} before {u}, which its bound depends on")
        lines.append(f"{IND * depth}for {v} in range(max({v}_t, {lp.lower.source()}), "
                     f"min({v}_t + {t}, {lp.upper.source()})):")
        depth += 1
    return lines, depth


class _Unsigned(ast.NodeTransformer):
    def __init__(self, arrays: set[str]):
        self.arrays = arrays

    def visit_Subscript(self, node):
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id in self.arrays:
            elems = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            wrapped = [ast.Call(ast.Name("uint64", ast.Load()), [e], []) for e in elems]
            node.slice = ast.Tuple(wrapped, ast.Load()) if len(wrapped) > 1 else wrapped[0]
        return node


def unsigned_subscripts(code: str, arrays: set[str]) -> str:
    """'C[i, j] += A[i, k]' -> 'C[uint64(i), uint64(j)] += A[uint64(i), uint64(k)]'."""
    tree = _Unsigned(arrays).visit(ast.parse(code))
    return ast.unparse(ast.fix_missing_locations(tree))


def nest_source(nest: Nest, fn_name: str, args: tuple[str, ...], plan: TilePlan | None) -> str:
    """One @njit function running the nest (tiled by plan, or as written when plan is None)."""
    lines = ["@njit(cache=True)", f"def {fn_name}({', '.join(args)}):"]
    arrays = {a.name for a in nest.arrays}
    if plan is not None:
        chain = nest.band_loops(plan.band)

    def emit(node, depth):
        if isinstance(node, Stmt):
            lines.append(IND * depth + unsigned_subscripts(node.code, arrays))
            return
        if plan is not None and node.var == plan.band[0]:
            body, inner = band_lines(chain, plan, depth)
            lines.extend(body)
            for s in chain[-1].body:
                emit(s, inner)
            return
        lines.append(f"{IND * depth}for {node.var} in range({node.lower.source()}, "
                     f"{node.upper.source()}):")
        for child in node.body:
            emit(child, depth + 1)

    emit(nest.root, 1)
    return "\n".join(lines) + "\n"


def program_source(kernel, plans: dict[str, TilePlan | None]) -> str:
    args = tuple(a.name for a in kernel.arrays) + kernel.scalars + kernel.params
    parts = [f'"""Generated by tinyqmoe.tiling.codegen for {kernel.name}: do not edit."""',
             "from numba import njit, uint64", ""]
    for idx, nest in enumerate(kernel.nests):
        plan = plans.get(nest.name)
        header = f"# {nest.name}: " + (f"order {','.join(plan.order)} tiles {plan.describe()}"
                                        if plan else "as written")
        parts += [header, nest_source(nest, f"nest_{idx}", args, plan)]
    return "\n".join(parts)


def gen_dir() -> Path:
    root = os.environ.get("TINYQMOE_CACHE") or Path.home() / ".cache" / "tinyqmoe"
    return Path(root) / "tiling"


def load_source(source: str, tag: str):
    """Write source to gen_<tag>_<hash>.py (atomically, once) and import it."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    name = f"gen_{re.sub(r'[^A-Za-z0-9_]', '_', tag)}_{digest}"
    path = gen_dir() / f"{name}.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(source)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    modname = f"tinyqmoe_tiling_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[modname] = module
    return module


class Program:
    """A kernel's nests compiled in order; call with (arrays dict, params dict)."""

    def __init__(self, kernel, plans: dict[str, TilePlan | None]):
        self.kernel = kernel
        self.plans = dict(plans)
        self.source = program_source(kernel, self.plans)
        module = load_source(self.source, kernel.name)
        self.nests = [getattr(module, f"nest_{i}") for i in range(len(kernel.nests))]

    def __call__(self, arrays: dict, params: dict) -> None:
        args = self.kernel.args(arrays, params)
        for fn in self.nests:
            fn(*args)

    def run_nest(self, idx: int, arrays: dict, params: dict) -> None:
        self.nests[idx](*self.kernel.args(arrays, params))


VECTOR_OP = re.compile(r"= (?:fadd|fmul|fsub)(?: [a-z]+)* <(\d+) x double>|llvm\.fma\.v(\d+)f64")


def vector_width(dispatcher) -> int:
    """Widest <N x double> arithmetic in a compiled (not cache-loaded) function's LLVM IR;
    1 = scalar only. The function must have been compiled for at least one signature."""
    widest = 1
    for ir in dispatcher.inspect_llvm().values():
        for m in VECTOR_OP.finditer(ir):
            widest = max(widest, int(m.group(1) or m.group(2)))
    return widest


def program_vector_widths(program: "Program", arrays: dict, params: dict) -> list[int]:
    """Vector width of each nest, from a fresh uncached compile of the same source (numba
    cannot inspect code loaded from its cache)."""
    namespace: dict = {}
    exec(compile(program.source.replace("@njit(cache=True)", "@njit(cache=False)"),
                 f"<{program.kernel.name} vector check>", "exec"), namespace)
    from numba import typeof
    sig = tuple(typeof(a) for a in program.kernel.args(arrays, params))
    widths = []
    for i in range(len(program.nests)):
        fn = namespace[f"nest_{i}"]
        fn.compile(sig)
        widths.append(vector_width(fn))
    return widths
