"""Where a model is and what kind of file it is: a path, or a name of a pinned model."""
from __future__ import annotations

from pathlib import Path

from tinyqmoe.errors import ModelNotFound


def resolve(path_or_name: str | Path) -> Path:
    """A model path, fetching the embedded default model when given its name."""
    p = Path(path_or_name)
    if p.exists():
        return p
    from tinyqmoe import assets

    fetched = assets.model_path(str(path_or_name))
    if fetched is not None:
        return fetched
    raise ModelNotFound(f"no such file or directory, and not a known model name "
                        f"(known: {', '.join(sorted(set(assets.MODEL_ALIASES)))})", path_or_name)


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
