"""Tile selection: footprints fit the budget, loop order, the engine-facing helpers."""
import pytest

from tinyqmoe.errors import UsageError
from tinyqmoe.hw import CacheSizes
from tinyqmoe.tiling import codec_chunk_bytes, matmul_blocks
from tinyqmoe.tiling.footprint import footprint_bytes
from tinyqmoe.tiling.polybench import KERNELS
from tinyqmoe.tiling.select import candidates, choose_order, select_tiles

CACHE = CacheSizes(l1=46336, l2=1482880, l3=8 << 20, source="test")


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("size", ["MEDIUM", "LARGE"])
def test_selected_footprint_fits_budget_and_matches_model(name, size):
    kernel = KERNELS[name]
    params = kernel.sizes[size]
    for n in kernel.nests:
        if not n.band:
            continue
        plan = select_tiles(n, params, CACHE)
        assert plan.footprint_bytes <= plan.capacity_bytes == int(0.5 * CACHE.l2)
        assert plan.footprint_bytes == footprint_bytes(n, plan.tile, params)
        assert sorted(plan.order) == sorted(n.band)


def test_order_puts_contiguous_non_reduction_loop_inside():
    assert choose_order(KERNELS["2mm"].nests[1], ("i", "j", "k")) == ("i", "k", "j")
    assert choose_order(KERNELS["gemm"].nests[1], ("i", "k", "j")) == ("i", "k", "j")
    assert choose_order(KERNELS["syrk"].nests[1], ("i", "k", "j")) == ("i", "k", "j")
    assert choose_order(KERNELS["doitgen"].nests[0], ("p", "s")) == ("s", "p")
    assert choose_order(KERNELS["trmm"].nests[0], ("i", "j", "k")) == ("i", "k", "j")


def test_bigger_cache_never_gives_a_smaller_footprint():
    n = KERNELS["gemm"].nests[1]
    params = KERNELS["gemm"].sizes["LARGE"]
    small = select_tiles(n, params, CacheSizes(32 << 10, 256 << 10, None, "t"))
    big = select_tiles(n, params, CacheSizes(32 << 10, 2 << 20, None, "t"))
    assert small.footprint_bytes <= 128 << 10 < big.footprint_bytes <= 1 << 20


def test_level_choice_and_missing_level():
    n = KERNELS["gemm"].nests[1]
    params = KERNELS["gemm"].sizes["MEDIUM"]
    assert select_tiles(n, params, CACHE, level="L1").footprint_bytes <= CACHE.l1 // 2
    with pytest.raises(UsageError, match="L3"):
        select_tiles(n, params, CacheSizes(1, 2, None, "t"), level="L3")


def test_candidates():
    assert list(candidates(10)) == [4, 6, 8, 10]
    assert list(candidates(3)) == [3]  # extents below 4 are not tiled
    assert candidates(1100)[-1] == 1100 and 768 in candidates(1100)


def test_matmul_blocks_fit_and_cover():
    b = matmul_blocks(128, 1536, 576, 4, CACHE)
    assert set(b) >= {"m", "n", "k", "order", "footprint_bytes", "capacity_bytes", "level"}
    assert 1 <= b["m"] <= 128 and 1 <= b["n"] <= 1536 and 1 <= b["k"] <= 576
    assert (b["m"] * b["k"] + b["k"] * b["n"] + b["m"] * b["n"]) * 4 == b["footprint_bytes"]
    assert b["footprint_bytes"] <= 0.5 * CACHE.l2
    assert b["order"][-1] == "n"
    one = matmul_blocks(1, 64, 64, 1, CACHE)  # everything fits: no blocking
    assert (one["m"], one["n"], one["k"]) == (1, 64, 64)
    with pytest.raises(UsageError):
        matmul_blocks(0, 4, 4, 4, CACHE)


def test_codec_chunk_bytes():
    assert codec_chunk_bytes(CacheSizes(48 << 10, 2 << 20, None, "t")) == 1 << 20
    assert codec_chunk_bytes(CACHE) == 512 << 10        # 1.41 MiB L2 -> 512 KiB
    assert codec_chunk_bytes(CacheSizes(32 << 10, 64 << 10, None, "t")) == 64 << 10
    assert codec_chunk_bytes(CacheSizes(32 << 10, 64 << 20, None, "t")) == 4 << 20


def test_cli_tile_no_run_json(tmp_path, monkeypatch, capsys):
    import json

    from tinyqmoe.cli import main
    from tinyqmoe.hw import probe as probe_mod, sysinfo

    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path))
    monkeypatch.setattr(sysinfo, "cpu_model", lambda: "cpu-test")
    monkeypatch.setattr(probe_mod, "QUICK", probe_mod.TINY)  # a real, tiny probe
    assert main(["tile", "--kernel", "3mm", "--size", "LARGE", "--no-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["plans"]) == {"3mm.E", "3mm.F", "3mm.G"}
    assert all(p["footprint_bytes"] <= p["capacity_bytes"] for p in out["plans"].values())
    assert (tmp_path / "hw.json").exists()


def test_strided_inner_loop_capped_by_pages():
    """syrk LARGE: j innermost walks A[j, k] down a column (8000-byte stride): <= 32 pages."""
    n = KERNELS["syrk"].nests[1]
    plan = select_tiles(n, KERNELS["syrk"].sizes["LARGE"], CACHE)
    assert plan.order[-1] == "j" and plan.tile["j"] <= 32
    # syr2k has two such accesses (A[j, k], B[j, k]): 2 * T_j <= 32
    n2 = KERNELS["syr2k"].nests[1]
    assert select_tiles(n2, KERNELS["syr2k"].sizes["LARGE"], CACHE).tile["j"] <= 16
    # MEDIUM rows are 1600 bytes apart: no cap
    assert select_tiles(n, KERNELS["syrk"].sizes["MEDIUM"], CACHE).tile["j"] > 32
