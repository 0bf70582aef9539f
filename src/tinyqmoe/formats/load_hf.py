"""Hugging Face Llama directories: config.json, (sharded) *.safetensors, tokenizer.json."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyqmoe.errors import CorruptionDetected, UnsupportedModel
from tinyqmoe.formats.checkpoint import Checkpoint
from tinyqmoe.model.tokenizer import TokenizerSpec, hf_tokenizer
from tinyqmoe.model.config import LlamaConfig, check_tensors, expected_tensors, read_json
from tinyqmoe.formats.safetensors_io import SafetensorsFile

_FLOAT_DTYPES = ("f32", "f16", "bf16", "f64")


class HFCheckpoint(Checkpoint):
    def __init__(self, directory: str | Path):
        d = Path(directory)
        config = LlamaConfig.from_json_file(d / "config.json")
        self._files = []
        try:
            for p in _weight_files(d):
                self._files.append(SafetensorsFile(p))
            self._open(d, config)
        except BaseException:
            self.close()
            raise

    def _open(self, d: Path, config: LlamaConfig) -> None:
        self._where: dict[str, SafetensorsFile] = {}
        for f in self._files:
            for name in f.entries:
                if name in self._where:
                    raise CorruptionDetected(f"tensor {name!r} is also in {self._where[name].path.name}", f.path)
                self._where[name] = f
        # transformers ties a stored LM head away when the config ties embeddings; old checkpoints carry
        # RoPE's inv_freq buffers. Both are ignored; anything else the config does not explain is refused.
        ignore = tuple(n for n in self._where if n.endswith(".rotary_emb.inv_freq"))
        if config.tie_embeddings:
            ignore += ("lm_head.weight",)
        check_tensors(config, {n: f.shape(n) for n, f in self._where.items()}, d, ignore=ignore)
        shapes, dtypes = {}, {}
        for name, shape in expected_tensors(config).items():
            f = self._where[name]
            if f.dtype_name(name) not in _FLOAT_DTYPES:
                raise UnsupportedModel(f"tensor {name!r} has dtype {f.dtype_name(name).upper()} (only float "
                                       f"weights: {', '.join(t.upper() for t in _FLOAT_DTYPES)})", f.path)
            shapes[name], dtypes[name] = shape, f.dtype_name(name)
        super().__init__(d, config, load_hf_tokenizer(d), shapes, dtypes)

    def _read(self, name: str) -> np.ndarray:
        return self._where[name].read(name)

    def _read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._where[name].read(name, start, stop)

    def close(self) -> None:
        for f in self._files:
            f.close()


def _weight_files(d: Path) -> list[Path]:
    index = d / "model.safetensors.index.json"
    if index.exists():
        top = read_json(index)
        weight_map = top.get("weight_map") if isinstance(top, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v and Path(v).name == v
                                                       for v in weight_map.values()):
            raise UnsupportedModel("bad safetensors index (weight_map must name shard files in this "
                                   "directory)", index)
        files = sorted({d / v for v in weight_map.values()})
        missing = [p.name for p in files if not p.is_file()]
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
        cfg = read_json(tc)
        if not isinstance(cfg, dict):
            raise UnsupportedModel("tokenizer_config.json is not a JSON object", tc)
    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    if template is None and (d / "chat_template.jinja").exists():
        try:
            template = (d / "chat_template.jinja").read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise UnsupportedModel("is not UTF-8 text", d / "chat_template.jinja") from None
    try:
        tokenizer_json = tj.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedModel("is not UTF-8 text", tj) from None
    bos, eos = _token_text(cfg.get("bos_token"), "bos_token", tc), _token_text(cfg.get("eos_token"), "eos_token", tc)
    add_bos = cfg.get("add_bos_token")
    if add_bos is None:  # Llama-3 style: BOS comes from the post-processor template
        add_bos = bool(bos) and _post_processor_adds(tokenizer_json, bos, tj)
    spec = TokenizerSpec(tokenizer_json=tokenizer_json, chat_template=template, bos_token=bos,
                         eos_token=eos, add_bos=bool(add_bos))
    spec.check_types(tc)
    hf_tokenizer(tokenizer_json, tj)
    spec.check_template(tc if cfg.get("chat_template") is not None else d / "chat_template.jinja")
    return spec


def _token_text(tok, key: str, path) -> str | None:
    if isinstance(tok, dict):  # {"content": "<s>", "lstrip": false, ...}
        tok = tok.get("content")
    if tok is not None and not isinstance(tok, str):
        raise UnsupportedModel(f"{key} is {tok!r}, not a token string", path)
    return tok


def _post_processor_adds(tokenizer_json: str, bos: str, path) -> bool:
    tok = hf_tokenizer(tokenizer_json, path)
    bos_id = tok.token_to_id(bos)
    ids = tok.encode("a", add_special_tokens=True).ids
    return bos_id is not None and bool(ids) and ids[0] == bos_id
