"""The cache probe end to end on a tiny grid, its kernels, hw.json, the CLI verb."""
import json

import numpy as np
import pytest

from tinyqmoe.errors import CorruptionDetected
from tinyqmoe.hw import CacheSizes, cache_sizes, from_result, store, sysinfo
from tinyqmoe.hw.probe import TINY, ProbeResult, run_probe, size_grid
from tinyqmoe.hw.probe_kernels import (link_chain, link_chain_ref, pointer_chase,
                                       pointer_chase_ref, triangular_walk, triangular_walk_ref,
                                       write_random_chain)


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path))
    return tmp_path


def chain(n_lines, seed=0):
    buf = np.zeros(n_lines * 8, dtype=np.int64)
    start = write_random_chain(buf, n_lines, np.random.default_rng(seed))
    return buf, start


def test_chain_is_one_cycle_through_every_line():
    buf, start = chain(97)
    seen, p = set(), start
    for _ in range(97):
        seen.add(p)
        p = int(buf[p])
    assert p == start and len(seen) == 97 and all(s % 8 == 0 for s in seen)


@pytest.mark.parametrize("n", [1, 2, 37])
def test_link_chain_matches_reference(n):
    order = np.random.default_rng(n).permutation(n)
    a, b = np.zeros(8 * n, dtype=np.int64), np.zeros(8 * n, dtype=np.int64)
    link_chain(a, order)
    link_chain_ref(b, order)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("hops", [0, 1, 50, 1000])
def test_pointer_chase_matches_reference(hops):
    buf, start = chain(61, seed=3)
    assert pointer_chase(buf, start, hops) == pointer_chase_ref(buf, start, hops)


@pytest.mark.parametrize("rounds,lo,hi", [(1, 1, 2), (2, 5, 40), (3, 30, 41)])
def test_triangular_walk_matches_reference(rounds, lo, hi):
    buf, start = chain(40, seed=5)
    assert triangular_walk(buf, rounds, lo, hi, start) == triangular_walk_ref(buf, rounds, lo, hi, start)


def test_size_grid_geometric_and_line_aligned():
    sizes = size_grid(TINY)
    assert sizes[0] == 4096 and sizes[-1] == 256 << 10
    assert all(s % 64 == 0 for s in sizes) and sizes == sorted(set(sizes))
    assert len(sizes) == 12  # 4K..128K at 2/octave (11 points), then 256K at 1/octave


def test_parse_size():
    assert sysinfo.parse_size("48K") == 48 << 10
    assert sysinfo.parse_size("480 MiB (1 instance)") == 480 << 20
    assert sysinfo.parse_size("2048K\n") == 2 << 20


def test_probe_end_to_end_tiny_grid(tmp_path):
    r = run_probe(TINY, progress=False)
    n = len(r.sizes)
    assert len(r.triangular_ns) == len(r.chase_ns) == n
    assert all(v > 0 for v in r.chase_ns)
    assert np.isnan(r.triangular_ns[-1]) and r.triangular_ns[0] > 0  # tail is chase-only
    assert r.thp_mode in ("always", "madvise", "never", "unknown")
    back = ProbeResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.sizes == r.sizes and back.l1 == r.l1
    from tinyqmoe.hw.plot import plot_probe
    png = plot_probe(r, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def fake_result(l1=45 << 10, l2=1 << 20, l3=None, quick=True, model="cpu-x"):
    return ProbeResult(cpu_model=model, sizes=[4096, 8192], triangular_ns=[1.0, float("nan")],
                       chase_ns=[1.0, 2.0], knees_triangular=[], knees_chase=[], l1=l1, l2=l2,
                       l3=l3, os_sizes={}, lscpu={}, thp_mode="never", huge_page_bytes=0,
                       seconds=0.1, quick=quick)


def test_hw_json_roundtrip_keyed_by_cpu(tmp_cache):
    store.save(fake_result(model="a"))
    store.save(fake_result(l1=32 << 10, model="b"))
    assert store.load("a").l1 == 45 << 10 and store.load("b").l1 == 32 << 10
    assert store.load("c") is None
    data = json.loads((tmp_cache / "hw.json").read_text())
    assert data["format"] == store.FORMAT and set(data["machines"]) == {"a", "b"}


def test_corrupt_hw_json_is_a_typed_error(tmp_cache):
    (tmp_cache / "hw.json").write_text("{not json")
    with pytest.raises(CorruptionDetected):
        store.load("a")


def test_cache_sizes_uses_hw_json(tmp_cache, monkeypatch):
    monkeypatch.setattr(sysinfo, "cpu_model", lambda: "cpu-x")
    store.save(fake_result(l3=8 << 20))
    assert cache_sizes() == CacheSizes(45 << 10, 1 << 20, 8 << 20, "hw.json, quick probe")


def test_missing_levels_fall_back_and_say_so():
    sizes = from_result(fake_result(l1=None, l2=None))
    assert sizes.l1 > 0 and sizes.l2 > sizes.l1 and "fallback" in sizes.source


def test_cli_probe_json_uses_cache(tmp_cache, monkeypatch, capsys):
    from tinyqmoe.cli import main
    monkeypatch.setattr(sysinfo, "cpu_model", lambda: "cpu-x")
    store.save(fake_result(quick=False))
    assert main(["probe", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["l1"] == 45 << 10
    assert main(["probe"]) == 0
    out = capsys.readouterr().out
    assert "L1" in out and "45 KiB" in out
