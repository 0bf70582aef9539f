"""A tiny random Llama checkpoint with a real (tiny) BPE tokenizer, for the container tests."""
from __future__ import annotations

import numpy as np

from tinyqmoe.formats.checkpoint import MemoryCheckpoint
from tinyqmoe.model.config import expected_tensors
from tinyqmoe.model.tokenizer import TokenizerSpec
from tinyqmoe.model.config import PRESETS


def tiny_tokenizer_spec() -> TokenizerSpec:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    return TokenizerSpec(tokenizer_json=tok.to_str(), chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}",
                         bos_token="<s>", eos_token="</s>", add_bos=True)


def tiny_checkpoint(seed: int = 0, config=None) -> MemoryCheckpoint:
    cfg = config or PRESETS["tiny"]
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_tensors(cfg).items():
        if len(shape) == 1:
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
    return MemoryCheckpoint(cfg, tensors, tiny_tokenizer_spec())
