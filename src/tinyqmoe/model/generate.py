"""Generation phases: prefill, decode_one_token, decode_n_tokens.

`fwd(state, ids) -> logits (1, V)` runs ids after the sequence in `state` (a bound forward pass:
api.Model._forward), so these phases know nothing of where the weights live.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from tinyqmoe.model.state import RunState
from tinyqmoe.model.sampling import SamplingParams, sample


class GenerationStats:
    def __init__(self):
        self.prompt_tokens = 0
        self.prompt_seconds = 0.0
        self.generated = 0        # tokens yielded
        self.gen_tokens = 0       # single-token forward passes timed (the decode rate)
        self.gen_seconds = 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def gen_tps(self) -> float:
        return self.gen_tokens / self.gen_seconds if self.gen_seconds else 0.0


def prefill(fwd, state: RunState, ids: list[int]) -> np.ndarray:
    """Run the prompt through the model in one batch; logits of its last token (V,)."""
    return fwd(state, ids)[0]


def decode_one_token(fwd, state: RunState, token: int) -> np.ndarray:
    return fwd(state, [token])[0]


def decode_n_tokens(fwd, state: RunState, logits: np.ndarray, n: int, params: SamplingParams,
                    stop_ids=frozenset(), stats: GenerationStats | None = None) -> Iterator[int]:
    """Sample up to n tokens, yielding each as soon as it is chosen; stops after a stop token."""
    rng = np.random.default_rng(params.seed)
    for i in range(n):
        token = sample(logits, params, rng)
        if token in stop_ids:
            return
        if stats is not None:
            stats.generated += 1
        yield token
        if i + 1 < n:
            # decode speed counts forward passes of one token, as llama.cpp's eval rate does
            t0 = time.perf_counter()
            logits = decode_one_token(fwd, state, token)
            if stats is not None:
                stats.gen_tokens += 1
                stats.gen_seconds += time.perf_counter() - t0
