"""A quick probe never replaces a full one; users of measured caches say which, beside the OS's
figures, and warn when L1/L2 are more than 2x from them. (Probe accuracy itself is measured in
benchmarks/probe_runs.py, not here.)"""
import logging

import pytest

from test_probe import fake_result
from tinyqmoe.hw import cache_sizes_for, from_result, store, sysinfo


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path))
    monkeypatch.setattr(sysinfo, "cpu_model", lambda: "cpu-x")
    return tmp_path


def test_a_quick_probe_never_replaces_a_full_one(cache):
    full = fake_result(l2=512 << 10, quick=False)
    full.measured_at = "full-time"
    assert store.save(full) is True
    quick = fake_result(l2=2 << 20, quick=True)
    assert store.save(quick) is False
    assert store.load("cpu-x").l2 == 512 << 10 and not store.load("cpu-x").quick
    newer = fake_result(l2=480 << 10, quick=False)
    assert store.save(newer) is True and store.load("cpu-x").l2 == 480 << 10   # a full one replaces a full one


def test_probe_quick_refresh_cli_keeps_the_full_probe(cache, capsys, monkeypatch):
    from tinyqmoe.cli import main
    from tinyqmoe.hw import probe

    full = fake_result(l2=512 << 10, quick=False)
    full.measured_at = "2026-01-01T00:00:00Z"
    store.save(full)
    monkeypatch.setattr(probe, "run_probe", lambda cfg, progress, quick: fake_result(l2=3 << 20, quick=True))
    assert main(["probe", "--quick", "--refresh"]) == 0
    out = capsys.readouterr().out
    assert "not stored" in out and "2026-01-01T00:00:00Z" in out
    assert store.load("cpu-x").l2 == 512 << 10


def test_users_say_which_caches_and_the_os_figures(cache, capsys):
    r = fake_result(l1=32 << 10, l2=512 << 10, quick=False)
    r.os_sizes = {"L1": 32 << 10, "L2": 512 << 10, "L3": 32 << 20}
    r.measured_at = "2026-12-01T14:00:00Z"
    store.save(r)
    sizes = cache_sizes_for("compress --chunk-size auto")
    err = capsys.readouterr().err
    assert sizes.l2 == 512 << 10
    assert err.startswith("compress --chunk-size auto: caches L1 32 KiB, L2 512 KiB (hw.json, full probe of "
                          "2026-12-01T14:00:00Z; OS: L1 32 KiB, L2 512 KiB, L3 32 MiB)")
    cache_sizes_for("tile", quiet=True)
    assert capsys.readouterr().err == ""


def test_disagreeing_with_the_os_by_more_than_2x_is_a_warning(caplog):
    bad = fake_result(l1=32 << 10, l2=int(2.49e6), quick=False)
    bad.os_sizes = {"L1": 32 << 10, "L2": 512 << 10}
    bad.measured_at = "warn-test"
    with caplog.at_level(logging.WARNING, logger="tinyqmoe"):
        sizes = from_result(bad)
    assert sizes.disagreements() and "L2 measured" in caplog.text and "4.7x" in caplog.text
    good = fake_result(l1=32 << 10, l2=400 << 10, quick=False)
    good.os_sizes = {"L1": 32 << 10, "L2": 512 << 10}
    assert from_result(good).disagreements() == []


def test_tile_says_which_caches(cache, capsys):
    from tinyqmoe.cli import main

    r = fake_result(l1=32 << 10, l2=512 << 10, quick=False)
    r.os_sizes = {"L1": 32 << 10, "L2": 512 << 10}
    store.save(r)
    assert main(["tile", "--kernel", "gemm", "--size", "MEDIUM", "--no-run"]) == 0
    assert "hw.json, full probe" in capsys.readouterr().out
