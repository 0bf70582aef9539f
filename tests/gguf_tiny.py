"""Tiny Llama GGUF files for the GGUF tests, written the way llama.cpp's convert_hf_to_gguf.py does:
gguf's own tensor-name map and writer, q_proj/k_proj rows permuted for interleaved RoPE, llama3
rope scaling stored as a `rope_freqs` tensor. Nothing here comes from tinyqmoe.formats.load_gguf.
"""
from __future__ import annotations

import math

import numpy as np

gguf = __import__("pytest").importorskip("gguf")


def tiny_hf_llama(*, tie: bool, rope_scaling: dict | None = None, seed: int = 0):
    """A random transformers LlamaForCausalLM: (its config.json dict, its state dict as numpy)."""
    torch = __import__("pytest").importorskip("torch")
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=rope_scaling, tie_word_embeddings=tie)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms are ones at init: make them tell layers apart
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
    sd = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
    if tie:
        sd.pop("lm_head.weight", None)
    d = cfg.to_dict()
    rope = dict(d.get("rope_parameters") or {})  # transformers >= 5 nests rope settings here
    d.setdefault("rope_theta", rope.pop("rope_theta", 10000.0))
    if d.get("rope_scaling") is None and rope.get("rope_type", "default") != "default":
        d["rope_scaling"] = rope
    return d, sd


def llamacpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llamacpp_rope_freqs(rs: dict, theta: float, head_dim: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (llama3 rope scaling)."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor, lo, hi = rs.get("factor", 8.0), rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / hi:
            out.append(1)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def gguf_layout(hf_cfg: dict, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF tensors -> GGUF names and row order (float32, HF [out, in] shapes)."""
    nmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hf_cfg["num_hidden_layers"])
    out = {}
    for name, w in sd.items():
        if name.endswith("q_proj.weight"):
            w = llamacpp_permute(w, hf_cfg["num_attention_heads"], hf_cfg["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = llamacpp_permute(w, hf_cfg["num_attention_heads"], hf_cfg["num_key_value_heads"])
        new = nmap.get_name(name, try_suffixes=(".weight",))
        assert new is not None, name
        out[new] = w
    return out


def write_llama_gguf(path, hf_cfg: dict, tensors: dict[str, np.ndarray], *,
                     qtype=gguf.GGMLQuantizationType.F32, arch: str = "llama", tokenizer: dict | None = None,
                     drop: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Write a Llama GGUF from GGUF-named float tensors; 2-D tensors stored as `qtype`.

    Returns what each tensor holds as stored (float32, GGUF row order) per gguf's reference dequantizer.
    """
    w = gguf.GGUFWriter(str(path), arch)
    head_dim = hf_cfg["hidden_size"] // hf_cfg["num_attention_heads"]
    w.add_context_length(hf_cfg["max_position_embeddings"])
    w.add_embedding_length(hf_cfg["hidden_size"])
    w.add_block_count(hf_cfg["num_hidden_layers"])
    w.add_feed_forward_length(hf_cfg["intermediate_size"])
    w.add_head_count(hf_cfg["num_attention_heads"])
    w.add_head_count_kv(hf_cfg["num_key_value_heads"])
    w.add_rope_freq_base(hf_cfg["rope_theta"])
    w.add_layer_norm_rms_eps(hf_cfg["rms_norm_eps"])
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(hf_cfg["vocab_size"])
    for key, value in (tokenizer or {}).items():
        getattr(w, f"add_{key}")(value)
    stored = {}
    rs = hf_cfg.get("rope_scaling")
    if rs and rs.get("rope_type") == "llama3":
        tensors = dict(tensors, **{"rope_freqs.weight": llamacpp_rope_freqs(rs, hf_cfg["rope_theta"], head_dim)})
    for name, t in tensors.items():
        if name in drop:
            continue
        t = np.ascontiguousarray(t, dtype=np.float32)
        if t.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            data = gguf.quants.quantize(t, qtype)
            w.add_tensor(name, data, raw_dtype=qtype)
            stored[name] = gguf.quants.dequantize(data, qtype).reshape(t.shape)
        else:
            w.add_tensor(name, t)
            stored[name] = t
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored
