"""Generated tiled kernels equal the untiled PolyBench code, including edge tiles."""
import numpy as np
import pytest

from tinyqmoe.hw import CacheSizes
from tinyqmoe.tiling.codegen import Program, program_source, program_vector_widths
from tinyqmoe.tiling.plan import manual
from tinyqmoe.tiling.polybench import KERNELS
from tinyqmoe.tiling.select import select_tiles

SMALL = {"NI": 19, "NJ": 23, "NK": 17, "NL": 21, "NM": 13, "N": 22, "M": 18,
         "NR": 4, "NQ": 3, "NP": 14}
ORDERS = {"gemm": ("i", "k", "j"), "2mm": ("i", "k", "j"), "3mm": ("k", "i", "j"),
          "syrk": ("i", "k", "j"), "syr2k": ("k", "i", "j"), "doitgen": ("s", "p"),
          "trmm": ("i", "k", "j")}


@pytest.fixture(autouse=True)
def gen_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_both(kernel, params, plans):
    ref, out = kernel.init(params), kernel.init(params)
    kernel.untiled(*kernel.args(ref, params))
    Program(kernel, plans)(out, params)
    return ref, out


@pytest.mark.parametrize("name", list(KERNELS))
def test_tiled_equals_untiled_with_non_dividing_tiles(name):
    kernel = KERNELS[name]
    params = {p: SMALL[p] for p in kernel.params}
    plans = {}
    for n in kernel.nests:
        if n.band:
            tiles = {v: (4, 5, 7)[i % 3] for i, v in enumerate(n.band)}  # no size divides
            plans[n.name] = manual(n, tiles, order=ORDERS[name])
    ref, out = run_both(kernel, params, plans)
    for o in kernel.outputs:
        np.testing.assert_allclose(out[o], ref[o], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gemm", "syrk", "trmm"])
def test_selected_plans_equal_untiled(name):
    kernel = KERNELS[name]
    params = {p: SMALL[p] for p in kernel.params}
    tiny_cache = CacheSizes(l1=2048, l2=4096, l3=None, source="test")  # forces real tiling
    plans = {n.name: select_tiles(n, params, tiny_cache) for n in kernel.nests if n.band}
    assert any(t < 13 for p in plans.values() for t in p.tile.values())  # really tiled
    ref, out = run_both(kernel, params, plans)
    for o in kernel.outputs:
        np.testing.assert_allclose(out[o], ref[o], rtol=1e-12, atol=1e-12)




def test_tile_sizes_are_constants_in_the_source():
    kernel = KERNELS["gemm"]
    n = kernel.nests[1]
    src = program_source(kernel, {n.name: manual(n, {"i": 32, "k": 64, "j": 256}, ("i", "k", "j"))})
    assert "for j_t in range(0, NJ, 256):" in src
    assert "min(j_t + 256, NJ)" in src
    assert "C[uint64(i), uint64(j)] += alpha * A[uint64(i), uint64(k)] * B[uint64(k), uint64(j)]" in src


def test_tiled_gemm_inner_loop_vectorizes():
    kernel = KERNELS["gemm"]
    n = kernel.nests[1]
    params = {"NI": 8, "NJ": 40, "NK": 8}
    prog = Program(kernel, {n.name: manual(n, {"i": 4, "k": 4, "j": 16}, ("i", "k", "j"))})
    widths = program_vector_widths(prog, kernel.init(params), params)
    assert widths[1] >= 2
