"""Where a model is and what kind of file it is: a path, a pinned model's name, or ORG/NAME from the
local Hugging Face cache.

    resolve("smol.tqm")                              # a path that exists wins
    resolve("default")                               # the pinned default model (tinyqmoe.assets)
    resolve("HuggingFaceTB/SmolLM2-135M-Instruct")   # the cached snapshot directory (HF layout)
    resolve("bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0")  # the GGUF in that repo whose name has Q8_0
    resolve("ORG/NAME@REV")                          # a branch or commit of the cache's refs

The cache is read as huggingface_hub lays it out ($HF_HUB_CACHE, else $HF_HOME/hub, else
$XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub): models--ORG--NAME/refs/<rev> holds
a commit, snapshots/<commit>/ the files. Nothing is ever downloaded.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from tinyqmoe.errors import ModelNotFound, UsageError

HUB_NAME = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+?))?(?::(?P<quant>[\w.-]+))?")


def resolve(path_or_name: str | Path) -> Path:
    """A model path, fetching the embedded default model when given its name."""
    p = Path(path_or_name)
    if p.exists():
        return p
    from tinyqmoe import assets

    fetched = assets.model_path(str(path_or_name))
    if fetched is not None:
        return fetched
    m = HUB_NAME.fullmatch(str(path_or_name))
    if m and not str(path_or_name).startswith((".", "/", "~")):
        return hub_model(m["repo"], m["rev"], m["quant"])
    raise ModelNotFound(f"no such file or directory, and not a known model name "
                        f"(known: {', '.join(sorted(set(assets.MODEL_ALIASES)))}, or ORG/NAME[:QUANT] from the "
                        f"local Hugging Face cache)", path_or_name)


def hub_cache_dir() -> Path:
    """huggingface_hub's cache directory, from the same environment variables it reads."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_snapshot(repo: str, revision: str | None = None) -> Path:
    """The snapshot directory of a model repository in the local cache (never the network)."""
    root = hub_cache_dir() / ("models--" + repo.replace("/", "--"))
    hint = (f"tinyqmoe never downloads: fetch it first, e.g. `hf download {repo}` "
            f"(or `huggingface-cli download {repo}`)")
    if not root.is_dir():
        raise ModelNotFound(f"not in the local Hugging Face cache ({hub_cache_dir()}); {hint}", repo)
    snapshots = root / "snapshots"
    rev = revision or "main"
    ref = root / "refs" / rev
    if ref.is_file():
        commit = ref.read_text().strip()
    elif (snapshots / rev).is_dir():
        commit = rev                          # a commit hash given as the revision
    elif revision is None:
        found = sorted((d for d in snapshots.glob("*") if d.is_dir()), key=lambda d: d.stat().st_mtime)
        if not found:
            raise ModelNotFound(f"the local Hugging Face cache holds no snapshot of it; {hint}", repo)
        commit = found[-1].name               # no refs/main: the newest snapshot
    else:
        raise ModelNotFound(f"revision {revision!r} is not in the local Hugging Face cache", repo)
    snap = snapshots / commit
    if not snap.is_dir():
        raise ModelNotFound(f"the cache's ref {rev!r} names snapshot {commit}, which is missing; {hint}", repo)
    return snap


def hub_model(repo: str, revision: str | None = None, quant: str | None = None) -> Path:
    """ORG/NAME[@REV][:QUANT] -> a GGUF file or an HF directory inside the cached snapshot."""
    snap = hub_snapshot(repo, revision)
    ggufs = sorted(p for p in snap.rglob("*.gguf") if p.is_file())
    name = repo + (f":{quant}" if quant else "")
    if quant:
        picked = [p for p in ggufs if quant.lower() in p.name.lower()]
        if len(picked) == 1:
            return picked[0]
        listed = ", ".join(p.name for p in picked or ggufs) or "none"
        if not picked:
            raise ModelNotFound(f"no GGUF file whose name contains {quant!r} in the cached snapshot "
                                f"(GGUF files: {listed})", name)
        raise UsageError(f"{quant!r} matches {len(picked)} GGUF files ({listed}): give more of the name", name)
    if (snap / "config.json").is_file():
        return snap
    if len(ggufs) == 1:
        return ggufs[0]
    if ggufs:
        raise UsageError(f"the repository holds {len(ggufs)} GGUF files ({', '.join(p.name for p in ggufs)}): "
                         f"pick one with {repo}:QUANT, e.g. {repo}:Q8_0", repo)
    raise ModelNotFound("the cached snapshot has neither config.json nor a .gguf file", name)


def model_kind(p: Path) -> str | None:
    """"hf" (a directory), "gguf", "tqm" (a tinyqmoe container) or None, from the first bytes."""
    from tinyqmoe.compress.container_format import MAGIC

    if p.is_dir():
        return "hf"
    if not p.is_file():
        return None
    try:
        with open(p, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError as exc:
        raise ModelNotFound(f"cannot read: {exc.strerror}", p) from None
    if head == MAGIC:
        return "tqm"
    if head[:4] == b"GGUF":
        return "gguf"
    return None


def is_container(p: Path) -> bool:
    return model_kind(p) == "tqm"
