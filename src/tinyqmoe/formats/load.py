"""Open a float checkpoint (HF directory or GGUF file) by path or by name."""
from __future__ import annotations

from pathlib import Path

from tinyqmoe.errors import ModelNotFound
from tinyqmoe.formats.checkpoint import Checkpoint
from tinyqmoe.locate import model_kind, resolve


def open_checkpoint(path_or_name: str | Path) -> Checkpoint:
    """A lazy float checkpoint from an HF directory or a GGUF file (or the name `default`)."""
    p = resolve(path_or_name)
    kind = model_kind(p)
    if kind == "hf":
        from tinyqmoe.formats.load_hf import HFCheckpoint

        return HFCheckpoint(p)
    if kind == "gguf":
        from tinyqmoe.formats.load_gguf import open_gguf

        return open_gguf(p)
    if kind == "tqm":
        raise ModelNotFound("is a .tqm container, not a float checkpoint (use tinyqmoe.load)", p)
    raise ModelNotFound("not a model: expected an HF directory (config.json + *.safetensors), "
                        "a .gguf or a .tqm file", p)
