"""Choosing the next token from logits."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0   # 0: greedy
    top_k: int = 0             # 0: no top-k cut
    top_p: float = 1.0         # 1: no nucleus cut
    seed: int | None = None


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """logits (V,) -> token id: argmax when temperature is 0, else top-k / top-p sampling."""
    if params.temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / params.temperature
    order = np.argsort(-z, kind="stable")
    if params.top_k > 0:
        order = order[: params.top_k]
    p = np.exp(z[order] - z[order[0]])
    p /= p.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), params.top_p) + 1)
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(order[rng.choice(len(order), p=p)])
