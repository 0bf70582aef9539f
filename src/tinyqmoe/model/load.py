"""Open any supported model file by path or by name."""
from __future__ import annotations

from pathlib import Path

from tinyqmoe.errors import ModelNotFound
from tinyqmoe.model.checkpoint import Checkpoint


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


def is_container(p: Path) -> bool:
    from tinyqmoe.compress.container_format import MAGIC

    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def open_checkpoint(path_or_name: str | Path) -> Checkpoint:
    """A lazy float checkpoint from an HF directory or a GGUF file (or the name `default`)."""
    p = resolve(path_or_name)
    if p.is_dir():
        from tinyqmoe.model.load_hf import HFCheckpoint

        return HFCheckpoint(p)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from tinyqmoe.model.load_gguf import open_gguf

        return open_gguf(p)
    if is_container(p):
        raise ModelNotFound("is a .tqm container, not a float checkpoint (use tinyqmoe.load)", p)
    raise ModelNotFound("not a model: expected an HF directory (config.json + *.safetensors), "
                        "a .gguf or a .tqm file", p)
