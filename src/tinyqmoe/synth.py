"""Synthetic Llama checkpoints with the real shapes: random weights, HF directory layout.

`write_synthetic_model("llama-3.2-1b", "/tmp/synth-1b")` writes what a Hugging Face Llama directory
holds -- config.json, sharded *.safetensors with model.safetensors.index.json, tokenizer.json and
tokenizer_config.json (Llama-3 special tokens and chat template) -- for a model too big to download
here, so that streaming, memory budgets and compression can be exercised at 1B/3B scale.

Weights. Each 2-D weight W [O, I] is drawn element by element as

    W[r, c] = std * row_scale[r] * col_gain[c] * Q_k(r)(u(r, c))

  u(r, c)    32 random bits of splitmix64(key + (r * I + c + 1) * golden): a counter-based generator, so
             any block of rows is drawn independently of the others (same bytes whatever the block size
             or thread count), deterministic from --seed and the tensor's name.
  Q_k        the quantile function of a Gaussian/Laplace mixture (unit variance, Laplace weight p_k),
             tabulated at 65537 points and interpolated; each row picks its mixture k.
  row_scale  log-normal per row (trained rows differ in norm).
  col_gain   1, except a few "outlier" input columns scaled up, as trained LLMs have.

The embedding is heavy-tailed (Laplace-like rows, a few columns up to 6x), the projections nearly
Gaussian -- what the default model (SmolLM2-135M) shows. Norm weights are near 1.

These are random weights: their int8 histograms resemble trained ones (order-0 entropy per channel
close to the default model's), but trained weights have structure across rows and columns that random
ones lack, so compression figures on synthetic models (codecs, zstd, low-rank...) are not a
prediction for real checkpoints. Use them for memory and speed, not for quality or ratio claims.

Memory: one tensor is written a block of rows at a time straight into its shard
(`SafetensorsWriter`), so the peak is a few blocks (~ 3 x 8 MB), not a tensor and never the model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from numba import njit, prange

from tinyqmoe.errors import UsageError
from tinyqmoe.model.config import expected_tensors
from tinyqmoe.model.config import LlamaConfig, preset
from tinyqmoe.formats.safetensors_io import SafetensorsWriter

SHAPES = ("tiny", "llama-3.2-1b", "llama-3.2-3b")
DTYPES = {"bf16": "BF16", "f32": "F32"}
DEFAULT_SHARD_BYTES = 2 * 10**9
BLOCK_ELEMS = 1 << 21            # elements drawn per block (8 MB of float32)

# ---------------------------------------------------------------- weight recipes
# Laplace weight of each tabulated mixture; a recipe lists which of them its rows draw from.
MIXTURES = (0.0, 0.05, 0.15, 0.5)
TABLE_POINTS = 65537


@dataclasses.dataclass(frozen=True)
class Recipe:
    std: float                           # overall standard deviation
    mixtures: tuple[int, ...]            # indices into MIXTURES, one chosen uniformly per row
    row_sigma: float                     # sigma of the log-normal row scale
    outlier_frac: float                  # share of input columns that are outliers (at least one)
    outlier_gain: tuple[float, float]    # their gain, uniform in [lo, hi]


RECIPES = {
    "embed": Recipe(0.02, (1, 2, 3), 0.18, 0.005, (1.5, 3.0)),     # heavy tails, a few 1.5-3x columns
    "linear": Recipe(0.02, (0, 0, 1), 0.2, 0.002, (1.2, 1.5)),     # nearly Gaussian
}


def mixture_tables() -> np.ndarray:
    """float32 [K, TABLE_POINTS]: quantiles at (i + 1/2) / TABLE_POINTS of each unit-variance mixture."""
    x = np.linspace(-14.0, 14.0, 280_001)
    gauss = 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in x]))
    b = 1.0 / math.sqrt(2.0)  # Laplace scale with variance 1
    laplace = np.where(x < 0, 0.5 * np.exp(x / b), 1.0 - 0.5 * np.exp(-x / b))
    probs = (np.arange(TABLE_POINTS) + 0.5) / TABLE_POINTS
    return np.stack([np.interp(probs, (1 - p) * gauss + p * laplace, x) for p in MIXTURES]).astype(np.float32)


def tensor_key(seed: int, name: str) -> int:
    """The 64-bit generator key of one tensor: independent of every other tensor's."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little")


def tensor_recipe(seed: int, name: str, shape: tuple[int, int]):
    """(key, row_table u8 [O], row_scale f32 [O], col_gain f32 [I]) of the 2-D weight `name`."""
    recipe = RECIPES["embed" if "embed_tokens" in name or "lm_head" in name else "linear"]
    key = tensor_key(seed, name)
    rng = np.random.default_rng(key)
    rows, cols = shape
    col_gain = np.ones(cols, np.float32)
    n_out = max(1, round(recipe.outlier_frac * cols))
    col_gain[rng.choice(cols, n_out, replace=False)] = rng.uniform(*recipe.outlier_gain, n_out)
    row_table = rng.choice(np.array(recipe.mixtures, np.uint8), rows)
    row_scale = (recipe.std * np.exp(recipe.row_sigma * rng.standard_normal(rows))).astype(np.float32)
    return key, row_table, row_scale, col_gain


# ---------------------------------------------------------------- kernels (numpy reference beside each)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def _splitmix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, parallel=True)
def fill_rows(out, key, row0, tables, row_table, row_scale, col_gain):
    # out f32 [R, I] <- rows row0 .. row0+R of the weight keyed `key`; tables f32 [K, P]; row_* [O]; col_gain [I]
    R, I = out.shape
    inv = np.float32(1.0 / 65536.0)
    for r in prange(R):
        t = tables[row_table[row0 + r]]
        s = row_scale[row0 + r]
        base = np.uint64(key) + np.uint64((row0 + r) * I + 1) * _GOLDEN
        for c in range(I):
            h = _splitmix64(base + np.uint64(c) * _GOLDEN)
            i = h >> np.uint64(48)
            f = np.float32((h >> np.uint64(32)) & np.uint64(0xFFFF)) * inv
            out[r, c] = (t[i] + f * (t[i + 1] - t[i])) * s * col_gain[c]


def fill_rows_ref(out, key, row0, tables, row_table, row_scale, col_gain):
    """Plain numpy `fill_rows`."""
    R, I = out.shape
    with np.errstate(over="ignore"):
        n = (np.arange(row0, row0 + R, dtype=np.uint64)[:, None] * np.uint64(I)
             + np.arange(I, dtype=np.uint64)[None, :] + np.uint64(1))
        z = np.uint64(key) + n * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        h = z ^ (z >> np.uint64(31))
    i = (h >> np.uint64(48)).astype(np.int64)
    f = ((h >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.float32) * np.float32(1.0 / 65536.0)
    t = tables[row_table[row0:row0 + R]]                                     # [R, P]
    lo, hi = np.take_along_axis(t, i, 1), np.take_along_axis(t, i + 1, 1)
    out[:] = (lo + f * (hi - lo)) * row_scale[row0:row0 + R, None] * col_gain[None, :]


@njit(cache=True, nogil=True, parallel=True)
def bf16_bits(out, x):
    # out u16 [R, C] <- x f32 [R, C] rounded to nearest even bfloat16 (reference: safetensors_io.f32_to_bf16_bits)
    R, C = x.shape
    for r in prange(R):
        u = x[r].view(np.uint32)
        for c in range(C):
            v = u[c]
            out[r, c] = np.uint16((v + np.uint32(0x7FFF) + ((v >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


# ---------------------------------------------------------------- tokenizer
SPECIAL_NAMED = ("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                 "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                 "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>")
# Llama 3's pre-tokenizer split.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CORPUS = """\
The quick brown fox jumps over the lazy dog. A small model runs on a small computer when its weights
are compressed and each layer is decoded only when the forward pass reaches it. Memory is the budget;
storage is slow, and every byte read from it costs time. Question: What is the capital of France?
Answer: Paris is the capital of France, and Rome is the capital of Italy. The river flows to the sea.
In 1969, people walked on the Moon for the first time; 2 + 2 = 4 and 10 * 10 = 100.
def forward(x, weights): return softmax(weights @ x)  # numbers, code and punctuation: {}, [], ().
Llamas live in the Andes; they are related to camels and alpacas. The weather today is sunny and warm.
She said: "I will read the book tomorrow." He asked, "Why not today?" They laughed and went home.
Il fait beau aujourd'hui. Das Wetter ist schön. El tiempo es bueno. Café, naïve, 東京, Москва.
"""


def special_tokens(vocab_size: int) -> list[str]:
    """Llama-3 special tokens ending the vocab: 256 of them (as Llama 3), 16 for vocabularies under 4096."""
    n = 256 if vocab_size >= 4096 else 16
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + n - len(SPECIAL_NAMED))]
    return list(SPECIAL_NAMED) + reserved


def _filler_words(count: int, taken: set[str]):
    """Pseudo-words ("Ġbako", "Ġtumire"...) standing in for the merges a small corpus cannot teach."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    n_syl = 2
    while count > 0:
        for k in range(len(syllables) ** n_syl):
            word, rest = "", k
            for _ in range(n_syl):
                word, rest = word + syllables[rest % len(syllables)], rest // len(syllables)
            token = "\u0120" + word   # byte-level form of " " + word
            if token not in taken:
                yield token
                count -= 1
                if count == 0:
                    return
        n_syl += 1


def build_tokenizer(vocab_size: int) -> str:
    """A byte-level BPE tokenizer.json with exactly `vocab_size` ids: 256 byte tokens, merges learned on
    CORPUS, filler pseudo-words, then the Llama-3 special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = special_tokens(vocab_size)
    regular = vocab_size - len(specials)
    if regular < 256:
        raise UsageError(f"vocab size {vocab_size} is too small for a byte-level tokenizer")
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre
    learner.train_from_iterator(CORPUS.splitlines(), trainers.BpeTrainer(
        vocab_size=regular, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab, merges = dict(learned["vocab"]), [tuple(m) for m in learned["merges"]]
    for token in _filler_words(regular - len(vocab), set(vocab)):
        vocab[token] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = specials[0]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                                      special_tokens=[(bos, tok.token_to_id(bos))])])
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    return tok.to_str()


def tokenizer_config(config: LlamaConfig) -> dict:
    return {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": CHAT_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_seq_len,
            "clean_up_tokenization_spaces": True, "model_input_names": ["input_ids", "attention_mask"]}


def config_json(config: LlamaConfig, dtype: str) -> dict:
    """LlamaConfig.to_hf_dict() plus what transformers' LlamaConfig also reads (token ids, biases, dtype)."""
    special = special_tokens(config.vocab_size)
    first = config.vocab_size - len(special)
    ids = {t: first + i for i, t in enumerate(special)}
    return {**config.to_hf_dict(), "bos_token_id": ids["<|begin_of_text|>"],
            "eos_token_id": [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]],
            "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
            "torch_dtype": {"BF16": "bfloat16", "F32": "float32"}[dtype]}


# ---------------------------------------------------------------- shards
def plan_shards(config: LlamaConfig, dtype: str, shard_bytes: int) -> list[dict[str, tuple[int, ...]]]:
    """Tensors in HF order packed greedily into shards of at most `shard_bytes` (a bigger tensor alone)."""
    itemsize = {"BF16": 2, "F32": 4}[dtype]
    shards, size = [{}], 0
    for name, shape in expected_tensors(config).items():
        nbytes = itemsize * math.prod(shape)
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = shape
        size += nbytes
    return shards


def _write_tensor(writer: SafetensorsWriter, name: str, shape: tuple[int, ...], seed: int, dtype: str,
                  tables: np.ndarray, bar) -> None:
    if len(shape) == 1:   # norm weights: near 1
        rng = np.random.default_rng(tensor_key(seed, name))
        writer.write(name, (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32))
        if bar is not None:
            bar.update(shape[0] * (2 if dtype == "BF16" else 4))
        return
    rows, cols = shape
    key, row_table, row_scale, col_gain = tensor_recipe(seed, name, shape)
    step = max(1, BLOCK_ELEMS // cols)
    block = np.empty((min(step, rows), cols), np.float32)
    bits = np.empty(block.shape, np.uint16) if dtype == "BF16" else None
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        fill_rows(block[:n], np.uint64(key), r0, tables, row_table, row_scale, col_gain)
        if bits is not None:
            bf16_bits(bits[:n], block[:n])
        writer.write(name, block[:n] if bits is None else bits[:n])
        if bar is not None:
            bar.update(n * cols * (2 if dtype == "BF16" else 4))


def write_synthetic_model(shape: str, out_dir: str | Path, seed: int = 0, dtype: str = "bf16",
                          shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True) -> Path:
    """Write a random Llama of the named shape as an HF directory at `out_dir`; returns its path.

    shape: "tiny", "llama-3.2-1b" or "llama-3.2-3b" (tinyqmoe.model.config.PRESETS). dtype: "bf16" or
    "f32". The directory appears whole or not at all: everything is written into a temp directory
    beside it, then renamed. An existing non-empty `out_dir` is an error.
    """
    if shape not in SHAPES:
        raise UsageError(f"unknown shape {shape!r} (choose from {', '.join(SHAPES)})")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    if shard_bytes <= 0:
        raise UsageError("shard size must be positive")
    config, kind = preset(shape), DTYPES[dtype]
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError("output exists and is not an empty directory", out)
    if not out.parent.is_dir():
        raise UsageError("parent directory does not exist", out.parent)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shards = plan_shards(config, kind, shard_bytes)
    total = sum((2 if kind == "BF16" else 4) * math.prod(s) for sh in shards for s in sh.values())
    from tinyqmoe.progress import bar as progress_bar

    bar = progress_bar(total=total, unit="B", unit_scale=True, desc=f"synth {shape} bytes written", leave=False,
                       enabled=progress)
    try:
        tmp.mkdir()
        _write_text(tmp / "config.json", json.dumps(config_json(config, kind), indent=2) + "\n")
        _write_text(tmp / "tokenizer.json", build_tokenizer(config.vocab_size))
        _write_text(tmp / "tokenizer_config.json", json.dumps(tokenizer_config(config), indent=2) + "\n")
        tables = mixture_tables()
        weight_map = {}
        for k, tensors in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            specs = {name: (kind, s) for name, s in tensors.items()}
            with SafetensorsWriter(tmp / fname, specs, metadata={"format": "pt"}) as writer:
                for name, s in tensors.items():
                    _write_tensor(writer, name, s, seed, kind, tables, bar)
            weight_map.update({name: fname for name in tensors})
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _write_text(tmp / "model.safetensors.index.json", json.dumps(index, indent=2) + "\n")
        _fsync_dir(tmp)
        if out.exists():
            out.rmdir()   # empty (checked above); rename does not replace a directory portably
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return out


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
