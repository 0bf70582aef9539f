"""Models by name from the local Hugging Face cache (a fake cache made here; never the network)."""
import shutil

import pytest

from tinyqmoe.cli import main
from tinyqmoe.errors import ModelNotFound, UsageError
from tinyqmoe.locate import hub_cache_dir, resolve

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_repo(hub, repo, files, commit=COMMIT, ref="main"):
    """The huggingface_hub layout: blobs, a snapshot of symlinks to them, refs/<ref> naming the commit."""
    root = hub / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = root / "blobs" / f"blob-{name.replace('/', '_')}"
        blob.write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).symlink_to(blob)
    if ref:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf" / "hub"


def test_cache_dir_follows_hf_home_and_hf_hub_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub_cache_dir() == tmp_path / "elsewhere"


def test_org_name_resolves_to_the_snapshot_of_refs_main(hub):
    snap = fake_repo(hub, "Org/Model-1", {"config.json": b"{}", "model.safetensors": b"x"})
    assert resolve("Org/Model-1") == snap
    assert resolve(f"Org/Model-1@{COMMIT}") == snap


def test_quant_suffix_picks_one_gguf(hub):
    snap = fake_repo(hub, "org/m-GGUF", {"m.Q8_0.gguf": b"GGUF", "m.Q4_K_M.gguf": b"GGUF", "README.md": b""})
    assert resolve("org/m-GGUF:Q8_0") == snap / "m.Q8_0.gguf"
    assert resolve("org/m-GGUF:q4_k_m") == snap / "m.Q4_K_M.gguf"   # case-insensitive
    with pytest.raises(UsageError, match="pick one with org/m-GGUF:QUANT"):
        resolve("org/m-GGUF")
    with pytest.raises(ModelNotFound, match="Q5_0"):
        resolve("org/m-GGUF:Q5_0")
    with pytest.raises(UsageError, match="matches 2"):
        resolve("org/m-GGUF:Q")


def test_a_single_gguf_needs_no_suffix(hub):
    snap = fake_repo(hub, "org/one", {"only.Q8_0.gguf": b"GGUF"})
    assert resolve("org/one") == snap / "only.Q8_0.gguf"


def test_not_in_the_cache_says_how_to_get_it_and_never_downloads(hub):
    with pytest.raises(ModelNotFound, match="never downloads.*hf download nobody/nothing"):
        resolve("nobody/nothing")
    fake_repo(hub, "org/m", {"config.json": b"{}"})
    with pytest.raises(ModelNotFound, match="revision 'v9'"):
        resolve("org/m@v9")


def test_a_path_that_exists_wins(hub, tmp_path, monkeypatch):
    fake_repo(hub, "org/m", {"config.json": b"{}"})
    local = tmp_path / "org" / "m"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve("org/m") == local.relative_to(tmp_path)


def test_generate_runs_a_model_from_the_cache(hub, tmp_path, capsys):
    pytest.importorskip("transformers")
    from tinymodels import save_tiny_hf_llama

    src = save_tiny_hf_llama(tmp_path / "src")
    fake_repo(hub, "TinyOrg/Tiny-Llama", {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()})
    assert main(["generate", "TinyOrg/Tiny-Llama", "-p", "The capital", "-n", "3", "-t", "1", "--no-cache"]) == 0
    assert capsys.readouterr().out.startswith("The capital")
    shutil.rmtree(hub)
    assert main(["generate", "TinyOrg/Tiny-Llama", "-p", "x"]) == 2
    assert "not in the local Hugging Face cache" in capsys.readouterr().err
