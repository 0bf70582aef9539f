"""A fake model with the engine's API, for the eval tests: a seeded bigram model in numpy.

Tokenizer: byte-level BPE (tokenizers) with a fixed vocabulary (BOS, EOS, the 256 byte symbols)
and a few hand-written merges (" A".." D", "Answer", "Question"), so multi-byte tokens and the
moved-whitespace rule are exercised. Deterministic across processes (Ray workers rebuild it).
"""
from __future__ import annotations

import types

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

WORDS = ["Answer", "Question", "The", "following", "Ġthe", "ĠA", "ĠB", "ĠC", "ĠD", "Ġof"]


def build_tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<bos>": 0, "<eos>": 1}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    merges = []
    for w in WORDS:
        cur = w[0]
        for ch in w[1:]:
            merges.append((cur, ch))
            cur += ch
            vocab.setdefault(cur, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


class FakeTokenizer:
    def __init__(self, add_bos: bool = False):
        self.tok = build_tokenizer()
        self.bos_id = 0
        self.add_bos = add_bos
        self.vocab_size = self.tok.get_vocab_size()

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self.tok.encode(text).ids
        return [self.bos_id] + ids if add_bos else ids

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids))


class FakeModel:
    """logits[t] = W[ids[t]]: a bigram model; `noise` perturbs W (a stand-in for quantization)."""

    def __init__(self, seed: int = 0, noise: float = 0.0, weights: str = "f32", add_bos: bool = False,
                 max_seq_len: int = 4096, delay: float = 0.0):
        self.tokenizer = FakeTokenizer(add_bos)
        v = self.tokenizer.vocab_size
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((v, v)).astype(np.float32) * 2
        if noise:
            w += np.random.default_rng(seed + 1000).standard_normal((v, v)).astype(np.float32) * noise
        if weights == "int8":  # per-row symmetric int8 round trip
            scale = np.abs(w).max(axis=1, keepdims=True) / 127
            w = np.round(w / scale).astype(np.float32) * scale
        self.W = w
        self.name = f"fake-{seed}" + (f"-noise{noise}" if noise else "")
        self.weights_kind = weights
        self.bits_per_weight = {"f32": 32.0, "int8": 8.0}[weights]
        self.config = types.SimpleNamespace(max_seq_len=max_seq_len)
        self.delay = delay
        self.calls = 0       # forward_batch calls
        self.questions = 0   # sequences started by a context forward (questions and shared prefixes)

    def logits(self, ids: list[int]) -> np.ndarray:
        return self.W[np.asarray(ids)]  # [T, V]

    def new_state(self, capacity: int = 0) -> "FakeState":
        return FakeState()

    def forward_batch(self, states, token_lists, all_logits=False, path="auto"):
        """The multi-sequence interface: logits of each sequence's new tokens (all, or the last)."""
        import time
        self.calls += 1
        if not all_logits:
            self.questions += len(states)
        if self.delay:
            time.sleep(self.delay)
        out = []
        for state, tokens in zip(states, token_lists):
            state.ids += list(tokens)
            lg = self.logits(list(tokens))
            out.append(lg if all_logits else lg[-1:])
        return out

    def loglikelihood_ids(self, context_ids, continuations):
        import time
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        out = []
        for cont in continuations:
            seq = list(context_ids) + list(cont)
            lg = self.logits(seq[:-1]).astype(np.float64)[len(context_ids) - 1:]  # [len(cont), V]
            lp = lg - np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1, keepdims=True)) - lg.max(1, keepdims=True)
            out.append((float(lp[np.arange(len(cont)), cont].sum()), bool((lg.argmax(1) == cont).all())))
        return out


class FakeState:
    """A bigram model's state: the ids it holds."""

    def __init__(self, ids=()):
        self.ids = list(ids)

    @property
    def pos(self) -> int:
        return len(self.ids)

    def fork(self) -> "FakeState":
        return FakeState(self.ids)

    def truncate(self, n: int) -> None:
        del self.ids[n:]


def load_fake(source: str, weights: str = "f32", threads=None, max_memory=None) -> FakeModel:
    """The `tinyqmoe.load` signature over fake models: source "fake" or "fake-noisy"."""
    if source == "fake":
        return FakeModel(0, 0.0, weights)
    if source == "fake-noisy":
        return FakeModel(0, 1.5, weights)
    raise ValueError(source)
