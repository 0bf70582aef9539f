"""The tokenizer a GGUF file describes, rebuilt with the `tokenizers` library.

A GGUF holds no tokenizer.json; llama.cpp keeps the vocabulary in metadata:

  tokenizer.ggml.model        "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
  tokenizer.ggml.pre          pre-tokenizer name ("smollm", "llama-bpe", ...), gpt2 only
  tokenizer.ggml.tokens       [V] strings (byte-level spelling for gpt2, "▁" for spaces in llama)
  tokenizer.ggml.token_type   [V] 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  tokenizer.ggml.merges       ["a b", ...] gpt2 only, best first
  tokenizer.ggml.scores       [V] llama only: higher merges first
  tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token, add_space_prefix
  tokenizer.chat_template     jinja2

The pre-tokenizers follow llama.cpp's llama-vocab.cpp (which regexes each `pre` name uses, and
that the Llama-3 family sets ignore_merges and adds BOS by default). Control tokens become
special added tokens, user-defined ones plain added tokens, so "<|im_start|>" stays whole.
The result never adds BOS/EOS itself (no post-processor): prepend BOS when `add_bos` is set.
"""
from __future__ import annotations

import numpy as np

from tinyqmoe.errors import CorruptionDetected, TinyQMoEError, UnsupportedModel
from tinyqmoe.model.tokenizer import TokenizerSpec

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> (regexes applied in turn, each splitting the previous pieces; ignore_merges)
PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool]] = {}
for _names, _rule in (
    (("default", "gpt2", "gpt-2", "mpt", "olmo", "jais"), ((_GPT2_SPLIT,), False)),
    (("smollm", "starcoder", "refact", "command-r", "codeshell"), ((r"\p{N}", _GPT2_SPLIT), False)),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
     ((_LLAMA3_SPLIT,), True)),
    (("dbrx", "smaug-bpe"), ((_LLAMA3_SPLIT,), False)),
):
    PRE_TOKENIZERS.update(dict.fromkeys(_names, _rule))
_ADD_BOS_BY_DEFAULT = {name for name, (_, ignore_merges) in PRE_TOKENIZERS.items() if ignore_merges}


def tokenizer_from_gguf(meta: dict, path: str | None = None) -> TokenizerSpec | None:
    """TokenizerSpec from GGUF metadata, or None when the file has no vocabulary."""
    kind = meta.get("tokenizer.ggml.model")
    if kind is None or "tokenizer.ggml.tokens" not in meta:
        return None
    tokens = meta["tokenizer.ggml.tokens"]
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise CorruptionDetected("tokenizer.ggml.tokens is not a list of strings", path)
    builders = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}
    if not isinstance(kind, str) or kind not in builders:
        raise UnsupportedModel(f"tokenizer model {kind!r} is not supported (gpt2 or llama)", path)
    try:
        types = [int(t) for t in np.asarray(meta.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))).ravel()]
        if len(types) != len(tokens):
            raise CorruptionDetected(f"tokenizer has {len(tokens)} tokens but {len(types)} token types", path)
        tok, add_bos = builders[kind](meta, tokens, types, path)
    except TinyQMoEError:
        raise
    except Exception as exc:  # the tokenizers library raises bare Exception on a bad vocabulary
        raise CorruptionDetected(f"tokenizer metadata is inconsistent: {exc}", path) from None
    add_bos = meta.get("tokenizer.ggml.add_bos_token", add_bos)
    if not isinstance(add_bos, bool):
        raise CorruptionDetected(f"tokenizer.ggml.add_bos_token is {add_bos!r}, not true or false", path)

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    template = meta.get("tokenizer.chat_template")
    spec = TokenizerSpec(tokenizer_json=tok.to_str(), chat_template=template if isinstance(template, str) else None,
                         bos_token=token("bos_token_id"), eos_token=token("eos_token_id"), add_bos=add_bos)
    spec.check_template(path)
    return spec


def _byte_level_bpe(meta, tokens, types, path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedModel(f"pre-tokenizer {pre!r} is not supported "
                               f"(known: {', '.join(sorted(PRE_TOKENIZERS))})", path)
    splits, ignore_merges = PRE_TOKENIZERS[pre]
    # Tokens are spelled in GPT-2's byte alphabet; a few files store some tokens raw: respell those.
    alphabet = _bytes_to_unicode()
    spelled = set(alphabet.values())
    vocab = {}
    for i, t in enumerate(tokens):
        vocab[t if set(t) <= spelled else "".join(alphabet[b] for b in t.encode("utf-8"))] = i
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in splits]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # a control token spelled outside the byte alphabet is a llama.cpp mislabel: leave it out
    _add_special(tok, tokens, types, (CONTROL,), lambda t: set(t) <= spelled)
    return tok, pre in _ADD_BOS_BY_DEFAULT


def _sentencepiece_bpe(meta, tokens, types, path):
    """SentencePiece BPE (Llama 1/2, Mistral): merges recovered from the token scores."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = meta.get("tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise UnsupportedModel("SentencePiece tokenizer without one score per token", path)
    vocab = {t: i for i, t in enumerate(tokens)}
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges_from_scores(tokens, types, scores),
                               unk_token=tokens[unk] if unk is not None else None,
                               byte_fallback=True, fuse_unk=True))
    steps = [normalizers.Replace(" ", "\u2581")]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(steps)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([decoders.Strip(" ", 1, 0)] if len(steps) == 2 else []))
    _add_special(tok, tokens, types, (CONTROL, UNKNOWN), lambda t: True)
    return tok, True


def _merges_from_scores(tokens, types, scores) -> list[tuple[str, str]]:
    """Every split of a normal token into two tokens is a merge; the better the whole's score, the earlier."""
    ids = {t: i for i, t in enumerate(tokens)}
    found = []
    for i, t in enumerate(tokens):
        if types[i] not in (NORMAL, USER_DEFINED) or len(t) < 2:
            continue
        for k in range(1, len(t)):
            a, b = ids.get(t[:k]), ids.get(t[k:])
            if a is not None and b is not None:
                found.append((-float(scores[i]), i, a, b))
    found.sort()
    return [(tokens[a], tokens[b]) for _, _, a, b in found]


def _add_special(tok, tokens, types, special_types, allowed) -> None:
    from tokenizers import AddedToken

    special = [AddedToken(t, special=True, normalized=False)
               for t, k in zip(tokens, types) if k in special_types and allowed(t)]
    plain = [AddedToken(t, special=False, normalized=False)
             for t, k in zip(tokens, types) if k == USER_DEFINED]
    if special:
        tok.add_special_tokens(special)
    if plain:
        tok.add_tokens(plain)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
