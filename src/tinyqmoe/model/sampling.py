"""Choosing the next token from logits (docs/conventions.md, "Sampling and generation").

Steps, in order: repeat penalty -> banned tokens (ignore_eos) -> greedy argmax if temperature <= 0,
else divide by the temperature -> top-k -> softmax -> top-p -> min-p -> renormalise -> draw.
"""
from __future__ import annotations

import dataclasses
import math
import secrets

import numpy as np

from tinyqmoe.errors import UsageError


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0     # <= 0: greedy
    top_k: int = 0               # 0: off
    top_p: float = 1.0           # 1: off
    seed: int | None = None      # None or -1: a random seed (drawn by resolved())
    min_p: float = 0.0           # 0: off
    repeat_penalty: float = 1.0  # 1: off
    repeat_last_n: int = 64      # tokens the penalty looks back over; 0 = off, -1 = all

    def check(self) -> "SamplingParams":
        """Raise UsageError for a value outside the ranges of docs/conventions.md."""
        def bad(name, flag, value, expected):
            raise UsageError(f"{name} ({flag}) {value!r}: expected {expected}")

        if not _finite(self.temperature):
            bad("temperature", "--temp", self.temperature, "a finite number (<= 0 = greedy)")
        if not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            bad("top_k", "--top-k", self.top_k, "an integer >= 0 (0 = off)")
        if not (_finite(self.top_p) and 0.0 <= self.top_p <= 1.0):
            bad("top_p", "--top-p", self.top_p, "0..1 (1 = off)")
        if not (_finite(self.min_p) and 0.0 <= self.min_p <= 1.0):
            bad("min_p", "--min-p", self.min_p, "0..1 (0 = off)")
        if not (_finite(self.repeat_penalty) and self.repeat_penalty > 0):
            bad("repeat_penalty", "--repeat-penalty", self.repeat_penalty, "a number > 0 (1 = off)")
        if not isinstance(self.repeat_last_n, (int, np.integer)) or self.repeat_last_n < -1:
            bad("repeat_last_n", "--repeat-last-n", self.repeat_last_n, "an integer >= -1 (-1 = all, 0 = off)")
        if self.seed is not None and (not isinstance(self.seed, (int, np.integer)) or self.seed < -1):
            bad("seed", "--seed", self.seed, "an integer >= 0, or -1 / None for a random seed")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def resolved(self) -> "SamplingParams":
        """Checked, with a random seed drawn from the OS if none was given (None or -1)."""
        self.check()
        if self.seed is None or self.seed == -1:
            return dataclasses.replace(self, seed=secrets.randbits(63))
        return self

    def recent(self, history) -> np.ndarray:
        """The token ids the repeat penalty applies to: the last repeat_last_n of history."""
        if self.repeat_penalty == 1.0 or self.repeat_last_n == 0 or not len(history):
            return np.zeros(0, np.int64)
        tail = history if self.repeat_last_n == -1 else history[-self.repeat_last_n:]
        return np.asarray(tail, np.int64)


def _finite(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def apply_repeat_penalty(z: np.ndarray, recent: np.ndarray, penalty: float) -> None:
    """In place: each distinct id in `recent` has its logit divided by penalty if > 0, else multiplied."""
    ids = np.unique(recent)
    v = z[ids]
    z[ids] = np.where(v > 0, v / penalty, v * penalty)


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
           recent: np.ndarray | None = None, banned=()) -> int:
    """logits (V,) -> token id. `recent`: ids the repeat penalty sees; `banned`: ids never chosen."""
    z = logits
    if (recent is not None and len(recent) and params.repeat_penalty != 1.0) or banned:
        z = np.array(logits, dtype=np.float32)
        if recent is not None and len(recent) and params.repeat_penalty != 1.0:
            apply_repeat_penalty(z, recent, params.repeat_penalty)
        if banned:
            z[np.fromiter(banned, np.int64)] = -np.inf
    if params.temperature <= 0:
        return int(np.argmax(z))
    z = z.astype(np.float64) / params.temperature
    if 0 < params.top_k < z.size:
        order = np.argpartition(-z, params.top_k - 1)[: params.top_k]
        order = order[np.argsort(-z[order], kind="stable")]
    else:
        order = np.argsort(-z, kind="stable")
    p = np.exp(z[order] - z[order[0]])
    p /= p.sum()
    keep = len(order)
    if params.top_p < 1.0:
        keep = min(keep, int(np.searchsorted(np.cumsum(p), params.top_p)) + 1)
    if params.min_p > 0.0:
        keep = min(keep, int(np.count_nonzero(p >= params.min_p * p[0])))
    if keep < len(order):
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(order[rng.choice(len(order), p=p)])
