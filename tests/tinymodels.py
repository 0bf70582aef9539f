"""Tiny models made inside the tests: a byte-level BPE tokenizer and random HF Llama checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Question: What is two plus two?\nAnswer: four",
    "Llamas live in the Andes; they are related to camels and alpacas.",
    "0123456789 numbers, punctuation! And unicode: café, naïve, 東京.",
] * 4

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer_json(vocab_size: int = 300) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str()


def save_tiny_hf_llama(directory: Path, *, tie: bool = False, rope_scaling: bool = True, seed: int = 0,
                       n_layers: int = 2, dtype: str = "float32", vocab_size: int = 300) -> Path:
    """A random LlamaForCausalLM with GQA (4 query / 2 kv heads), saved with transformers."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=tie, bos_token_id=0, eos_token_id=2,
        rope_scaling=({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 32} if rope_scaling else None),
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger-than-default weights so that the logits are not all near zero
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
            else:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model = model.to(getattr(torch, dtype))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "tokenizer.json").write_text(tiny_tokenizer_json(vocab_size))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "add_bos_token": False,
        "chat_template": CHAT_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast"}))
    return directory
