"""Footprint formulas against brute-force counting of touched elements on small nests."""
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.tiling.footprint import brute_force_footprint, footprint
from tinyqmoe.tiling.ir import Array, Nest, aff, loop, stmt
from tinyqmoe.tiling.polybench import KERNELS

SMALL = {"NI": 20, "NJ": 22, "NK": 24, "NL": 26, "NM": 28, "N": 24, "M": 20,
         "NR": 6, "NQ": 5, "NP": 20}


def tiled_nests():
    for k in KERNELS.values():
        for n in k.nests:
            if n.band:
                yield pytest.param(k, n, id=n.name)


def box_at(nest, tiles, origin):
    return {v: (origin[v], origin[v] + tiles[v]) for v in nest.band}


@pytest.mark.parametrize("kernel,nest", list(tiled_nests()))
def test_polybench_footprints_exact_on_interior_tiles(kernel, nest):
    params = {p: SMALL[p] for p in kernel.params}
    tiles = {v: 3 + 2 * i for i, v in enumerate(nest.band)}  # 3, 5, 7: odd, non-dividing
    origin = {v: 4 for v in nest.band}
    if nest.name in ("syrk.update", "syr2k.update"):
        origin["i"] = 12  # i-tile rows 12..14 lie wholly below the j-tile columns' diagonal...
        origin["j"] = 2   # ...and the j-tile (2..8) is disjoint from them: j <= i everywhere
    if nest.name == "trmm.update":
        origin["k"] = 10  # k-tile 10..16 > i-tile 4..6: every (i, k) pair is in the domain
    fixed = {"r": 2, "q": 3} if kernel.name == "doitgen" else {}
    counted = brute_force_footprint(nest, params, box_at(nest, tiles, origin), fixed)
    assert footprint(nest, tiles, params) == counted


def test_footprint_clamps_tiles_to_extent():
    k = KERNELS["gemm"]
    n = k.nests[1]
    p = {"NI": 5, "NJ": 6, "NK": 7}
    assert footprint(n, {"i": 100, "k": 100, "j": 100}, p) == {"C": 30, "A": 35, "B": 42}


def stencil_nest():
    """B[i, j] = A[i, j] + A[i + 1, j] + A[i, j + 2] + A[i + j, 0]: offsets widen the box."""
    arrays = (Array("A", ("N", "N")), Array("B", ("N", "N")))
    body = stmt("B[i, j] = A[i, j] + A[i + 1, j] + A[i, j + 2] + A[i + j, 0]", ["B[i, j]"],
                ["A[i, j]", "A[i + 1, j]", "A[i, j + 2]", "A[i + j, 0]"])
    return Nest("stencil", loop("i", 0, "N - 1", loop("j", 0, "N - 2", body)), arrays, ("N",),
                (), ("i", "j"))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 5), st.integers(0, 5))
def test_offset_group_and_skewed_subscript_exact(ti, tj, oi, oj):
    n = stencil_nest()
    params = {"N": 30}
    counted = brute_force_footprint(n, params, {"i": (oi, oi + ti), "j": (oj, oj + tj)})
    model = footprint(n, {"i": ti, "j": tj}, params)
    # A[i, j], A[i+1, j], A[i, j+2] are one group: a (ti+1) x (tj+2) box, exact;
    # A[i+j, 0] is another group of ti+tj-1 elements, disjoint only if it misses that box,
    # so the model is an upper bound for A and exact for B.
    assert model["B"] == counted["B"] == ti * tj
    assert model["A"] >= counted["A"]
    assert model["A"] == (ti + 1) * (tj + 2) + (ti + tj - 1)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 10), st.integers(0, 10))
def test_overlapping_groups_upper_bound(ti, tj, oi, oj):
    """syr2k's A[i, k] and A[j, k] may overlap within one tile: model >= count always."""
    k = KERNELS["syr2k"]
    n = k.nests[1]
    params = {"N": 24, "M": 20}
    counted = brute_force_footprint(n, params, {"i": (oi, oi + ti), "k": (0, 4), "j": (oj, oj + tj)})
    model = footprint(n, {"i": ti, "k": 4, "j": tj}, params)
    for array, count in counted.items():
        assert model[array] >= count


def test_strided_subscript_is_an_upper_bound():
    arrays = (Array("A", ("N",)),)
    n = Nest("stride2", loop("i", 0, "N", stmt("A[2 * i] += 1.0", ["A[2 * i]"], ["A[2 * i]"])),
             arrays, ("N",), (), ("i",))
    assert brute_force_footprint(n, {"N": 40}, {"i": (0, 5)}) == {"A": 5}
    assert footprint(n, {"i": 5}, {"N": 40}) == {"A": 9}


def test_affine_parser():
    assert aff("2*i - k + N + 3").evaluate({"i": 5, "k": 1, "N": 10}) == 22
    assert aff("-(i) + 1").source() == "-i + 1"
    with pytest.raises(ValueError):
        aff("i * j")
