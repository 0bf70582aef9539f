"""Only fully permutable bands are tiled; illegal tilings are refused with a clear error."""
import pytest

from tinyqmoe.errors import UsageError
from tinyqmoe.tiling.codegen import Program
from tinyqmoe.tiling.ir import Array, Nest, loop, stmt
from tinyqmoe.tiling.legality import band_violations, check_band, feasible
from tinyqmoe.tiling.plan import manual
from tinyqmoe.tiling.polybench import KERNELS


def test_feasible_small_systems():
    # 0 <= x <= 3, x >= 5  -> empty
    assert not feasible([({"x": 1}, 0), ({"x": -1}, 3), ({"x": 1}, -5)], [])
    # x = y + 1, y >= 0, x <= 0 -> empty
    assert not feasible([({"y": 1}, 0), ({"x": -1}, 0)], [({"x": 1, "y": -1}, -1)])
    # x + y <= 4, x >= 2, y >= 2 -> (2, 2)
    assert feasible([({"x": -1, "y": -1}, 4), ({"x": 1}, -2), ({"y": 1}, -2)], [])
    # 2x = 1 has a rational solution only: integer tightening on the inequality pair refutes it
    assert not feasible([], [({"x": 2}, -1)])


@pytest.mark.parametrize("nest", [n for k in KERNELS.values() for n in k.nests if n.band],
                         ids=lambda n: n.name)
def test_polybench_bands_are_permutable(nest):
    assert band_violations(nest) == []


def wavefront():
    """A[i, j] = A[i - 1, j + 1]: distance (1, -1), the textbook band that needs skewing."""
    body = stmt("A[i, j] = A[i - 1, j + 1] + 1.0", ["A[i, j]"], ["A[i - 1, j + 1]"])
    return Nest("wavefront", loop("i", 1, "N", loop("j", 0, "N - 1", body)),
                (Array("A", ("N", "N")),), ("N",), (), ("i", "j"))


def test_wavefront_tiling_refused():
    bad = band_violations(wavefront())
    assert bad and bad[0].carried_by == "i" and bad[0].negative_in == "j"
    with pytest.raises(UsageError, match=r"illegal tiling of wavefront.*not fully permutable"):
        check_band(wavefront())


def test_inner_band_of_wavefront_is_legal():
    """Tiling only j (i outside the band carries the dependence) is legal."""
    assert band_violations(wavefront(), ("j",)) == []


def test_doitgen_with_shared_scratch_refused():
    """sum[p] is reused for every (r, q): the 4-deep band (r, q, p, s) is not permutable."""
    k = KERNELS["doitgen"]
    body = stmt("sum_[p] += A[r, q, s] * C4[s, p]", ["sum_[p]"], ["sum_[p]", "A[r, q, s]", "C4[s, p]"])
    nest = Nest("doitgen4", loop("r", 0, "NR", loop("q", 0, "NQ", loop("p", 0, "NP", loop(
        "s", 0, "NP", body)))), k.arrays, k.params, (), ("r", "q", "p", "s"))
    with pytest.raises(UsageError, match="sum_"):
        check_band(nest)


def test_trmm_reversed_triangle_is_still_legal_and_forward_reads_are_too():
    """B[i, j] += A[k, i] B[k, j] is permutable with k > i (PolyBench) and with k < i."""
    k = KERNELS["trmm"]
    body = stmt("B[i, j] += A[k, i] * B[k, j]", ["B[i, j]"], ["B[i, j]", "A[k, i]", "B[k, j]"])
    nest = Nest("trmm_lower", loop("i", 0, "M", loop("j", 0, "N", loop("k", 0, "i", body))),
                k.arrays, k.params, (), ("i", "j", "k"))
    assert band_violations(nest) == []


def test_anti_dependence_reversal_refused():
    """A[i, j] = A[i + 1, j - 1]: reads what a later i overwrites; j distance negative."""
    body = stmt("A[i, j] = A[i + 1, j - 1] * 0.5", ["A[i, j]"], ["A[i + 1, j - 1]"])
    nest = Nest("anti", loop("i", 0, "N - 1", loop("j", 1, "N", body)),
                (Array("A", ("N", "N")),), ("N",), (), ("i", "j"))
    with pytest.raises(UsageError):
        check_band(nest)


def test_order_against_triangular_bound_refused():
    k = KERNELS["syrk"]
    nest = k.nests[1]  # j < i + 1: j cannot run outside i
    plan = manual(nest, {"i": 4, "k": 4, "j": 4}, order=("j", "i", "k"))
    with pytest.raises(UsageError, match="depends on"):
        Program(k, {nest.name: plan})


def test_manual_plan_must_cover_band():
    nest = KERNELS["gemm"].nests[1]
    with pytest.raises(ValueError):
        manual(nest, {"i": 4, "k": 4}, order=("i", "k"))
    with pytest.raises(ValueError):
        manual(nest, {"i": 0, "k": 4, "j": 4})
