"""PolyBench/C 4.2 kernels: dataset sizes, init, untiled numba code in PolyBench's loop
order, and the same computation as loop nests (ir.Nest) for tiling.

Each kernel is a program of nests run in order; nests with a `band` are the ones tiled.
Where PolyBench interleaves an O(n^2) statement with an O(n^3) loop (gemm's C *= beta
inside i, 2mm's tmp = 0 inside (i, j)), the statement is distributed into its own nest
before (or, for trmm's B *= alpha, after) the compute nest. Each such distribution is
legal: the moved statement touches only elements that the compute nest reads or writes
for the same (i, j) at a later (earlier, for trmm) point in the original order, and no
other dependence crosses it (trmm: row i only reads rows k > i, which the original order
has not yet scaled either). The tests check every tiled program against the untiled one.

Shapes: PolyBench names (NI, NJ, ...). float64 everywhere (PolyBench's DATA_TYPE double).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import njit

from tinyqmoe.tiling.ir import Array, Nest, loop, stmt

ALPHA, BETA = 1.5, 1.2


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[str, ...]
    sizes: dict[str, dict[str, int]]      # dataset -> {param: value}
    arrays: tuple[Array, ...]             # argument order: arrays, then scalars, then params
    scalars: tuple[str, ...]
    outputs: tuple[str, ...]              # arrays compared between versions
    nests: tuple[Nest, ...]
    untiled: Callable                     # njit(*arrays, *scalars, *params), PolyBench order
    init: Callable[[dict], dict]          # params -> {array name: ndarray}

    def scalar_values(self) -> tuple[float, ...]:
        return tuple({"alpha": ALPHA, "beta": BETA}[s] for s in self.scalars)

    def args(self, arrays: dict, params: dict) -> tuple:
        return (tuple(arrays[a.name] for a in self.arrays) + self.scalar_values()
                + tuple(int(params[p]) for p in self.params))


def grid(shape, fn):
    """fn(i, j, ...) over index grids -> float64 array (PolyBench init formulas)."""
    return np.fromfunction(fn, shape, dtype=np.int64).astype(np.float64)


def A2(name, r, c):
    return Array(name, (r, c), 8)


# ---------------------------------------------------------------- gemm: C = beta C + alpha A B
@njit(cache=True)
def gemm_untiled(C, A, B, alpha, beta, NI, NJ, NK):
    """C [NI,NJ], A [NI,NK], B [NK,NJ]: PolyBench 4.2 gemm loop order (i, j | i, k, j)."""
    for i in range(NI):
        for j in range(NJ):
            C[i, j] *= beta
        for k in range(NK):
            for j in range(NJ):
                C[i, j] += alpha * A[i, k] * B[k, j]


def gemm_init(p):
    ni, nj, nk = p["NI"], p["NJ"], p["NK"]
    return {"C": grid((ni, nj), lambda i, j: (i * j + 1) % ni / ni),
            "A": grid((ni, nk), lambda i, k: i * (k + 1) % nk / nk),
            "B": grid((nk, nj), lambda k, j: k * (j + 2) % nj / nj)}


def matmul_nest(name, C, A, B, I, J, K, scalar="alpha * ", band_order=("i", "k", "j")):
    """C[i, j] += scalar A[i, k] B[k, j] over i < I, j < J, k < K, loops in band_order."""
    bounds = {"i": I, "j": J, "k": K}
    body = stmt(f"{C}[i, j] += {scalar}{A}[i, k] * {B}[k, j]", [f"{C}[i, j]"],
                [f"{C}[i, j]", f"{A}[i, k]", f"{B}[k, j]"])
    a, b, c = band_order
    return loop(a, 0, bounds[a], loop(b, 0, bounds[b], loop(c, 0, bounds[c], body)))


def scale_nest(C, I, J, code):
    return loop("i", 0, I, loop("j", 0, J, stmt(code, [f"{C}[i, j]"], [f"{C}[i, j]"])))


GEMM_ARRAYS = (A2("C", "NI", "NJ"), A2("A", "NI", "NK"), A2("B", "NK", "NJ"))
GEMM = Kernel(
    "gemm", ("NI", "NJ", "NK"),
    {"MEDIUM": dict(NI=200, NJ=220, NK=240), "LARGE": dict(NI=1000, NJ=1100, NK=1200)},
    GEMM_ARRAYS, ("alpha", "beta"), ("C",),
    (Nest("gemm.scale", scale_nest("C", "NI", "NJ", "C[i, j] *= beta"), GEMM_ARRAYS,
          ("NI", "NJ", "NK"), ("alpha", "beta")),
     Nest("gemm.update", matmul_nest("gemm", "C", "A", "B", "NI", "NJ", "NK"), GEMM_ARRAYS,
          ("NI", "NJ", "NK"), ("alpha", "beta"), ("i", "k", "j"))),
    gemm_untiled, gemm_init)


# ------------------------------------------------------- 2mm: D = alpha A B C + beta D
@njit(cache=True)
def mm2_untiled(tmp, A, B, C, D, alpha, beta, NI, NJ, NK, NL):
    """tmp [NI,NJ], A [NI,NK], B [NK,NJ], C [NJ,NL], D [NI,NL]: PolyBench order (i, j, k)."""
    for i in range(NI):
        for j in range(NJ):
            tmp[i, j] = 0.0
            for k in range(NK):
                tmp[i, j] += alpha * A[i, k] * B[k, j]
    for i in range(NI):
        for j in range(NL):
            D[i, j] *= beta
            for k in range(NJ):
                D[i, j] += tmp[i, k] * C[k, j]


def mm2_init(p):
    ni, nj, nk, nl = p["NI"], p["NJ"], p["NK"], p["NL"]
    return {"tmp": np.zeros((ni, nj)),
            "A": grid((ni, nk), lambda i, j: (i * j + 1) % ni / ni),
            "B": grid((nk, nj), lambda i, j: i * (j + 1) % nj / nj),
            "C": grid((nj, nl), lambda i, j: (i * (j + 3) + 1) % nl / nl),
            "D": grid((ni, nl), lambda i, j: i * (j + 2) % nk / nk)}


MM2_ARRAYS = (A2("tmp", "NI", "NJ"), A2("A", "NI", "NK"), A2("B", "NK", "NJ"),
              A2("C", "NJ", "NL"), A2("D", "NI", "NL"))
MM2_P = ("NI", "NJ", "NK", "NL")
MM2 = Kernel(
    "2mm", MM2_P,
    {"MEDIUM": dict(NI=180, NJ=190, NK=210, NL=220),
     "LARGE": dict(NI=800, NJ=900, NK=1100, NL=1200)},
    MM2_ARRAYS, ("alpha", "beta"), ("tmp", "D"),
    (Nest("2mm.zero", scale_nest("tmp", "NI", "NJ", "tmp[i, j] = 0.0"), MM2_ARRAYS, MM2_P),
     Nest("2mm.tmp", matmul_nest("", "tmp", "A", "B", "NI", "NJ", "NK", band_order=("i", "j", "k")),
          MM2_ARRAYS, MM2_P, ("alpha",), ("i", "j", "k")),
     Nest("2mm.scale", scale_nest("D", "NI", "NL", "D[i, j] *= beta"), MM2_ARRAYS, MM2_P),
     Nest("2mm.D", matmul_nest("", "D", "tmp", "C", "NI", "NL", "NJ", "", ("i", "j", "k")),
          MM2_ARRAYS, MM2_P, (), ("i", "j", "k"))),
    mm2_untiled, mm2_init)


# --------------------------------------------------------------- 3mm: G = (A B) (C D)
@njit(cache=True)
def mm3_untiled(E, A, B, F, C, D, G, NI, NJ, NK, NL, NM):
    """E [NI,NJ] = A [NI,NK] B [NK,NJ]; F [NJ,NL] = C [NJ,NM] D [NM,NL]; G [NI,NL] = E F."""
    for i in range(NI):
        for j in range(NJ):
            E[i, j] = 0.0
            for k in range(NK):
                E[i, j] += A[i, k] * B[k, j]
    for i in range(NJ):
        for j in range(NL):
            F[i, j] = 0.0
            for k in range(NM):
                F[i, j] += C[i, k] * D[k, j]
    for i in range(NI):
        for j in range(NL):
            G[i, j] = 0.0
            for k in range(NJ):
                G[i, j] += E[i, k] * F[k, j]


def mm3_init(p):
    ni, nj, nk, nl, nm = p["NI"], p["NJ"], p["NK"], p["NL"], p["NM"]
    return {"E": np.zeros((ni, nj)), "F": np.zeros((nj, nl)), "G": np.zeros((ni, nl)),
            "A": grid((ni, nk), lambda i, j: (i * j + 1) % ni / (5 * ni)),
            "B": grid((nk, nj), lambda i, j: (i * (j + 1) + 2) % nj / (5 * nj)),
            "C": grid((nj, nm), lambda i, j: i * (j + 3) % nl / (5 * nl)),
            "D": grid((nm, nl), lambda i, j: (i * (j + 2) + 2) % nk / (5 * nk))}


MM3_ARRAYS = (A2("E", "NI", "NJ"), A2("A", "NI", "NK"), A2("B", "NK", "NJ"), A2("F", "NJ", "NL"),
              A2("C", "NJ", "NM"), A2("D", "NM", "NL"), A2("G", "NI", "NL"))
MM3_P = ("NI", "NJ", "NK", "NL", "NM")


def _mm3_pair(out, a, b, I, J, K):
    return (Nest(f"3mm.zero{out}", scale_nest(out, I, J, f"{out}[i, j] = 0.0"), MM3_ARRAYS, MM3_P),
            Nest(f"3mm.{out}", matmul_nest("", out, a, b, I, J, K, "", ("i", "j", "k")),
                 MM3_ARRAYS, MM3_P, (), ("i", "j", "k")))


MM3 = Kernel(
    "3mm", MM3_P,
    {"MEDIUM": dict(NI=180, NJ=190, NK=200, NL=210, NM=220),
     "LARGE": dict(NI=800, NJ=900, NK=1000, NL=1100, NM=1200)},
    MM3_ARRAYS, (), ("E", "F", "G"),
    _mm3_pair("E", "A", "B", "NI", "NJ", "NK") + _mm3_pair("F", "C", "D", "NJ", "NL", "NM")
    + _mm3_pair("G", "E", "F", "NI", "NL", "NJ"),
    mm3_untiled, mm3_init)


# ---------------------------------------------------- syrk: C = alpha A A^T + beta C (lower)
@njit(cache=True)
def syrk_untiled(C, A, alpha, beta, N, M):
    """C [N,N] (lower triangle), A [N,M]: PolyBench order (i, j<=i | i, k, j<=i)."""
    for i in range(N):
        for j in range(i + 1):
            C[i, j] *= beta
        for k in range(M):
            for j in range(i + 1):
                C[i, j] += alpha * A[i, k] * A[j, k]


def syrk_init(p):
    n, m = p["N"], p["M"]
    return {"A": grid((n, m), lambda i, j: (i * j + 1) % n / n),
            "C": grid((n, n), lambda i, j: (i * j + 2) % m / m)}


SYRK_ARRAYS = (A2("C", "N", "N"), A2("A", "N", "M"))
SYRK = Kernel(
    "syrk", ("N", "M"),
    {"MEDIUM": dict(M=200, N=240), "LARGE": dict(M=1000, N=1200)},
    SYRK_ARRAYS, ("alpha", "beta"), ("C",),
    (Nest("syrk.scale", loop("i", 0, "N", loop("j", 0, "i + 1", stmt(
        "C[i, j] *= beta", ["C[i, j]"], ["C[i, j]"]))), SYRK_ARRAYS, ("N", "M"), ("beta",)),
     Nest("syrk.update", loop("i", 0, "N", loop("k", 0, "M", loop("j", 0, "i + 1", stmt(
         "C[i, j] += alpha * A[i, k] * A[j, k]", ["C[i, j]"], ["C[i, j]", "A[i, k]", "A[j, k]"])))),
         SYRK_ARRAYS, ("N", "M"), ("alpha",), ("i", "k", "j"))),
    syrk_untiled, syrk_init)


# ------------------------------------------- syr2k: C = alpha (A B^T + B A^T) + beta C (lower)
@njit(cache=True)
def syr2k_untiled(C, A, B, alpha, beta, N, M):
    """C [N,N] (lower triangle), A [N,M], B [N,M]: PolyBench order."""
    for i in range(N):
        for j in range(i + 1):
            C[i, j] *= beta
        for k in range(M):
            for j in range(i + 1):
                C[i, j] += A[j, k] * alpha * B[i, k] + B[j, k] * alpha * A[i, k]


def syr2k_init(p):
    n, m = p["N"], p["M"]
    return {"A": grid((n, m), lambda i, j: (i * j + 1) % n / n),
            "B": grid((n, m), lambda i, j: (i * j + 2) % m / m),
            "C": grid((n, n), lambda i, j: (i * j + 3) % n / m)}


SYR2K_ARRAYS = (A2("C", "N", "N"), A2("A", "N", "M"), A2("B", "N", "M"))
SYR2K = Kernel(
    "syr2k", ("N", "M"),
    {"MEDIUM": dict(M=200, N=240), "LARGE": dict(M=1000, N=1200)},
    SYR2K_ARRAYS, ("alpha", "beta"), ("C",),
    (Nest("syr2k.scale", loop("i", 0, "N", loop("j", 0, "i + 1", stmt(
        "C[i, j] *= beta", ["C[i, j]"], ["C[i, j]"]))), SYR2K_ARRAYS, ("N", "M"), ("beta",)),
     Nest("syr2k.update", loop("i", 0, "N", loop("k", 0, "M", loop("j", 0, "i + 1", stmt(
         "C[i, j] += A[j, k] * alpha * B[i, k] + B[j, k] * alpha * A[i, k]", ["C[i, j]"],
         ["C[i, j]", "A[j, k]", "B[i, k]", "B[j, k]", "A[i, k]"])))),
         SYR2K_ARRAYS, ("N", "M"), ("alpha",), ("i", "k", "j"))),
    syr2k_untiled, syr2k_init)


# ------------------------------------------------ doitgen: A[r, q, :] = A[r, q, :] @ C4
@njit(cache=True)
def doitgen_untiled(A, C4, sum_, NR, NQ, NP):
    """A [NR,NQ,NP], C4 [NP,NP], sum_ [NP]: PolyBench order (r, q, p, s)."""
    for r in range(NR):
        for q in range(NQ):
            for p in range(NP):
                sum_[p] = 0.0
                for s in range(NP):
                    sum_[p] += A[r, q, s] * C4[s, p]
            for p in range(NP):
                A[r, q, p] = sum_[p]


def doitgen_init(p):
    nr, nq, np_ = p["NR"], p["NQ"], p["NP"]
    return {"A": np.fromfunction(lambda i, j, k: (i * j + k) % np_ / np_, (nr, nq, np_),
                                 dtype=np.int64).astype(np.float64),
            "C4": grid((np_, np_), lambda i, j: i * j % np_ / np_),
            "sum_": np.zeros(np_)}


DOITGEN_ARRAYS = (Array("A", ("NR", "NQ", "NP")), A2("C4", "NP", "NP"), Array("sum_", ("NP",)))
DOITGEN = Kernel(
    "doitgen", ("NR", "NQ", "NP"),
    {"MEDIUM": dict(NR=50, NQ=40, NP=60), "LARGE": dict(NR=150, NQ=140, NP=160)},
    DOITGEN_ARRAYS, (), ("A",),
    (Nest("doitgen", loop("r", 0, "NR", loop(
        "q", 0, "NQ",
        loop("p0", 0, "NP", stmt("sum_[p0] = 0.0", ["sum_[p0]"], [])),
        loop("p", 0, "NP", loop("s", 0, "NP", stmt(
            "sum_[p] += A[r, q, s] * C4[s, p]", ["sum_[p]"], ["sum_[p]", "A[r, q, s]", "C4[s, p]"]))),
        loop("p2", 0, "NP", stmt("A[r, q, p2] = sum_[p2]", ["A[r, q, p2]"], ["sum_[p2]"])))),
        DOITGEN_ARRAYS, ("NR", "NQ", "NP"), (), ("p", "s")),),
    doitgen_untiled, doitgen_init)


# --------------------------------------------------- trmm: B = alpha A^T B, A unit lower
@njit(cache=True)
def trmm_untiled(A, B, alpha, M, N):
    """A [M,M] (unit lower triangular), B [M,N]: PolyBench order (i, j, k > i)."""
    for i in range(M):
        for j in range(N):
            for k in range(i + 1, M):
                B[i, j] += A[k, i] * B[k, j]
            B[i, j] = alpha * B[i, j]


def trmm_init(p):
    m, n = p["M"], p["N"]
    A = grid((m, m), lambda i, j: (i + j) % m / m)
    A = np.tril(A, -1) + np.eye(m)
    return {"A": A, "B": grid((m, n), lambda i, j: (n + (i - j)) % n / n)}


TRMM_ARRAYS = (A2("A", "M", "M"), A2("B", "M", "N"))
TRMM = Kernel(
    "trmm", ("M", "N"),
    {"MEDIUM": dict(M=200, N=240), "LARGE": dict(M=1000, N=1200)},
    TRMM_ARRAYS, ("alpha",), ("B",),
    (Nest("trmm.update", loop("i", 0, "M", loop("j", 0, "N", loop("k", "i + 1", "M", stmt(
        "B[i, j] += A[k, i] * B[k, j]", ["B[i, j]"], ["B[i, j]", "A[k, i]", "B[k, j]"])))),
        TRMM_ARRAYS, ("M", "N"), (), ("i", "j", "k")),
     Nest("trmm.scale", scale_nest("B", "M", "N", "B[i, j] = alpha * B[i, j]"), TRMM_ARRAYS,
          ("M", "N"), ("alpha",))),
    trmm_untiled, trmm_init)


KERNELS: dict[str, Kernel] = {k.name: k for k in (GEMM, MM2, MM3, SYRK, SYR2K, DOITGEN, TRMM)}
DATASETS = ("MEDIUM", "LARGE")
