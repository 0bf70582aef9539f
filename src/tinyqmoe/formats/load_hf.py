"""Hugging Face Llama directories: config.json, (sharded) *.safetensors, tokenizer.json."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyqmoe.errors import UnsupportedModel
from tinyqmoe.formats.checkpoint import Checkpoint, expected_tensors
from tinyqmoe.model.tokenizer import TokenizerSpec
from tinyqmoe.model.config import LlamaConfig
from tinyqmoe.formats.safetensors_io import SafetensorsFile


class HFCheckpoint(Checkpoint):
    def __init__(self, directory: str | Path):
        d = Path(directory)
        config = LlamaConfig.from_json_file(d / "config.json")
        self._files = [SafetensorsFile(p) for p in _weight_files(d)]
        self._where: dict[str, SafetensorsFile] = {}
        for f in self._files:
            for name in f.entries:
                self._where[name] = f
        shapes, dtypes = {}, {}
        for name, shape in expected_tensors(config).items():
            f = self._where.get(name)
            if f is None:
                raise UnsupportedModel(f"weights have no tensor {name!r}", d)
            if f.shape(name) != shape:
                raise UnsupportedModel(f"tensor {name!r} has shape {f.shape(name)}, config says {shape}", f.path)
            shapes[name], dtypes[name] = shape, f.dtype_name(name)
        super().__init__(d, config, load_hf_tokenizer(d), shapes, dtypes)

    def _read(self, name: str) -> np.ndarray:
        return self._where[name].read(name)

    def close(self) -> None:
        for f in self._files:
            f.close()


def _weight_files(d: Path) -> list[Path]:
    index = d / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UnsupportedModel("bad safetensors index (no weight_map)", index) from None
        files = sorted({d / v for v in weight_map.values()})
        missing = [p.name for p in files if not p.exists()]
        if missing:
            raise UnsupportedModel(f"shard {missing[0]} named in the index is missing", index)
        return files
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise UnsupportedModel("no *.safetensors weights (pytorch .bin checkpoints are not supported)", d)
    return files


def load_hf_tokenizer(d: Path) -> TokenizerSpec | None:
    tj = d / "tokenizer.json"
    if not tj.exists():
        return None
    cfg = {}
    tc = d / "tokenizer_config.json"
    if tc.exists():
        try:
            cfg = json.loads(tc.read_text())
        except json.JSONDecodeError as exc:
            raise UnsupportedModel(f"tokenizer_config.json is not valid JSON ({exc.msg})", tc) from None
    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (d / "chat_template.jinja").exists():
        template = (d / "chat_template.jinja").read_text()
    tokenizer_json = tj.read_text()
    bos, eos = _token_text(cfg.get("bos_token")), _token_text(cfg.get("eos_token"))
    add_bos = cfg.get("add_bos_token")
    if add_bos is None:  # Llama-3 style: BOS comes from the post-processor template
        add_bos = bool(bos) and _post_processor_adds(tokenizer_json, bos)
    return TokenizerSpec(tokenizer_json=tokenizer_json, chat_template=template, bos_token=bos,
                         eos_token=eos, add_bos=bool(add_bos))


def _token_text(tok) -> str | None:
    if isinstance(tok, dict):  # {"content": "<s>", "lstrip": false, ...}
        return tok.get("content")
    return tok


def _post_processor_adds(tokenizer_json: str, bos: str) -> bool:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    bos_id = tok.token_to_id(bos)
    ids = tok.encode("a", add_special_tokens=True).ids
    return bos_id is not None and bool(ids) and ids[0] == bos_id
