"""Tokenizers rebuilt from GGUF metadata give the ids of the tokenizer the file was made from."""
import json

import pytest

from tinyqmoe.errors import UnsupportedModel
from tinyqmoe.formats.gguf_reader import GGUFFile
from tinyqmoe.formats.tokenizer_gguf import tokenizer_from_gguf

gguf = pytest.importorskip("gguf")
tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

TEXTS = [
    "Hello world", "The capital of France is", "12345 apples, 3.14159 and 1,000,000", "x  y\n\n z",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "héllo 日本語 🙂 naïve café",
    "I'm can't we'll they've", "def f(x):\n    return x**2  # comment\n", "   leading and trailing   ",
    "\n\n\n", "a\u00a0b", "<|endoftext|><repo_name>x", "",
]
# Where transformers' GGUF conversion (no digit split for "smollm") differs; ids from llama.cpp
# (llama-cpp-python 0.3.36, vocab_only, tokenize(add_bos=False, special=True)) on the default model.
LLAMA_CPP_IDS = {
    "  1  22\t333": [256, 33, 256, 34, 34, 197, 35, 35, 35],
    "x  1": [104, 256, 33],
    "width:  100px": [6930, 42, 256, 33, 32, 32, 20653],
    "Ⅻ ½ ² ٣": [173, 223, 121, 216, 16738, 216, 19133, 216, 164, 113],  # ½ ² ٣ are \p{N} too
}
CORPUS = ["The quick brown fox jumps over the lazy dog 123 times.", "I'm sure they'll say 42, won't they?",
          "def add(a, b):\n    return a + b\n", "naïve café, 日本語, emoji 🙂 and  spaces   here\n\n",
          "In 2024 the year had 366 days; 3.14159 is pi."] * 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_byte_level(pre_tokenizer, ignore_merges=False) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def write_tokenizer_gguf(path, tok: Tokenizer, pre: str, **extra) -> dict:
    """The GGUF metadata llama.cpp's converter writes for a byte-level BPE tokenizer; returns it as read back."""
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in SPECIALS else 1 for t, _ in vocab])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for key, value in extra.items():
        getattr(w, f"add_{key}")(value)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return GGUFFile(path).metadata


@pytest.mark.parametrize("pre,pre_tokenizer,ignore_merges", [
    ("smollm", pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False)]), False),
    ("llama-bpe", pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                                   r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), True),
    ("gpt2", pre_tokenizers.ByteLevel(add_prefix_space=False), False),
])
def test_trained_tokenizer_survives_gguf(tmp_path, pre, pre_tokenizer, ignore_merges):
    original = train_byte_level(pre_tokenizer, ignore_merges)
    meta = write_tokenizer_gguf(tmp_path / "t.gguf", original, pre, chat_template="{{ messages }}")
    spec = tokenizer_from_gguf(meta, "t.gguf")
    rebuilt = Tokenizer.from_str(spec.tokenizer_json)
    for text in TEXTS + list(LLAMA_CPP_IDS) + CORPUS[:5]:
        ids = rebuilt.encode(text, add_special_tokens=False).ids
        assert ids == original.encode(text, add_special_tokens=False).ids, text
        assert rebuilt.decode(ids, skip_special_tokens=False) == text
    assert rebuilt.encode("<|im_start|>", add_special_tokens=False).ids == [1]
    assert (spec.bos_token, spec.eos_token, spec.chat_template) == ("<|im_start|>", "<|im_end|>", "{{ messages }}")
    assert spec.add_bos is (pre == "llama-bpe")  # llama.cpp's default when the file does not say


def test_add_bos_flag_from_file_wins(tmp_path):
    original = train_byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False))
    meta = write_tokenizer_gguf(tmp_path / "t.gguf", original, "llama-bpe", add_bos_token=False)
    assert tokenizer_from_gguf(meta).add_bos is False


def test_unsupported_tokenizers(tmp_path):
    original = train_byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False))
    meta = write_tokenizer_gguf(tmp_path / "t.gguf", original, "mystery-pre")
    with pytest.raises(UnsupportedModel, match="t.gguf: pre-tokenizer 'mystery-pre' is not supported"):
        tokenizer_from_gguf(meta, str(tmp_path / "t.gguf"))
    with pytest.raises(UnsupportedModel, match="tokenizer model 'bert' is not supported"):
        tokenizer_from_gguf(dict(meta, **{"tokenizer.ggml.model": "bert"}))
    assert tokenizer_from_gguf({"general.architecture": "llama"}) is None


def write_sentencepiece_gguf(path) -> dict:
    """A SentencePiece-BPE vocabulary as llama.cpp stores one: <unk> <s> </s>, 256 byte tokens, then
    pieces by merge rank with score -rank and no merge list."""
    sp = tokenizers.SentencePieceBPETokenizer()
    sp.train_from_iterator(CORPUS, vocab_size=300, show_progress=False)
    tokens, types = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)], [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    for rank, (piece, _) in enumerate(sorted(sp.get_vocab().items(), key=lambda kv: kv[1])):
        tokens.append(piece), types.append(1), scores.append(-float(rank))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens), w.add_token_types(types), w.add_token_scores(scores)
    w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_unk_token_id(0)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return GGUFFile(path).metadata


def test_sentencepiece_tokenizer_matches_transformers(tmp_path):
    transformers_gguf = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    meta = write_sentencepiece_gguf(tmp_path / "spm.gguf")
    spec = tokenizer_from_gguf(meta)
    tok = Tokenizer.from_str(spec.tokenizer_json)
    reference, _ = transformers_gguf.convert_gguf_tokenizer(
        *transformers_gguf.get_gguf_tokenizer(str(tmp_path / "spm.gguf"))[:2])
    assert (spec.bos_token, spec.eos_token, spec.add_bos) == ("<s>", "</s>", True)
    for text in TEXTS + ["über", "tab\there", "x\ny"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
        if not text.startswith(" "):
            assert ids == reference.encode(text, add_special_tokens=False).ids, text
    # Leading spaces: llama.cpp (0.3.36) keeps each as its own "▁" after the prefix one; transformers'
    # Metaspace conversion drops one.
    assert tok.encode(" Hello", add_special_tokens=False).ids == \
        [tok.token_to_id("\u2581")] + tok.encode("Hello", add_special_tokens=False).ids
    assert tok.encode("\u2603", add_special_tokens=False).tokens == ["\u2581", "<0xE2>", "<0x98>", "<0x83>"]  # byte fallback


# ---- the default model (SmolLM2-135M-Instruct): against transformers' GGUF conversion and llama.cpp

@pytest.fixture(scope="module")
def default_tokenizers(default_gguf):
    transformers = pytest.importorskip("transformers")
    spec = tokenizer_from_gguf(GGUFFile(default_gguf).metadata, str(default_gguf))
    reference = transformers.AutoTokenizer.from_pretrained(default_gguf.parent, gguf_file=default_gguf.name)
    return spec, Tokenizer.from_str(spec.tokenizer_json), reference


@pytest.mark.slow
def test_default_model_ids_match_transformers(default_tokenizers):
    spec, tok, reference = default_tokenizers
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids == reference.encode(text, add_special_tokens=False), text
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.get_vocab_size() == 49152


@pytest.mark.slow
def test_default_model_ids_match_llama_cpp(default_tokenizers):
    _, tok, _ = default_tokenizers
    for text, want in LLAMA_CPP_IDS.items():
        assert tok.encode(text, add_special_tokens=False).ids == want, text
        assert tok.decode(want) == text


@pytest.mark.slow
def test_default_model_special_tokens_and_template(default_tokenizers):
    spec, tok, reference = default_tokenizers
    for i, special in enumerate(SPECIALS):
        assert tok.encode(special, add_special_tokens=False).ids == [i]
    assert tok.decode([1, 4093, 198, 6004, 2], skip_special_tokens=True) == "user\nhi"
    assert (spec.bos_token, spec.eos_token, spec.add_bos) == ("<|im_start|>", "<|im_end|>", False)
    assert spec.chat_template == reference.chat_template and "<|im_start|>" in spec.chat_template
