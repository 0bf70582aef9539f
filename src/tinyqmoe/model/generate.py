"""Generation phases: prefill, decode_one_token, decode_n_tokens; and the text they become, cut at
stop strings (docs/conventions.md, "Stops").

`fwd(state, ids) -> logits (1, V)` runs ids after the sequence in `state` (a bound forward pass:
api.Model._forward), so these phases know nothing of where the weights live.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np

from tinyqmoe.model.state import RunState
from tinyqmoe.model.sampling import SamplingParams, sample

# Why generation ended: the model's end-of-sequence token, a stop string, -n tokens, a full context.
STOP_REASONS = ("eos", "stop", "length", "context")
FINISH_REASON = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}  # OpenAI's names


class GenerationStats:
    def __init__(self):
        self.prompt_tokens = 0
        self.prompt_seconds = 0.0
        self.generated = 0        # tokens sampled (those of a stop string that was cut included)
        self.gen_tokens = 0       # single-token forward passes timed (the decode rate)
        self.gen_seconds = 0.0
        self.stop_reason = None   # one of STOP_REASONS once generation has ended
        self.stop_string = None   # the stop string that matched, when stop_reason == "stop"
        self.seed = None          # the seed used (drawn at random when none was given)
        self.context_tokens = 0   # positions held when generation ended (prompt + generated)
        self.max_new_tokens = None

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def gen_tps(self) -> float:
        return self.gen_tokens / self.gen_seconds if self.gen_seconds else 0.0

    @property
    def finish_reason(self) -> str | None:
        """The stop reason in OpenAI's vocabulary ("stop" or "length")."""
        return FINISH_REASON.get(self.stop_reason)

    def describe_stop(self) -> str | None:
        """`[stopped: ...]` for a reply that was cut (None when the model ended it or it has not ended)."""
        if self.stop_reason == "length":
            return f"[stopped: -n {self.max_new_tokens} reached]"
        if self.stop_reason == "context":
            return f"[stopped: context full at {self.context_tokens} tokens]"
        if self.stop_reason == "stop" and self.stop_string is None:
            return "[stopped: stop string]"
        if self.stop_reason == "stop":
            shown = self.stop_string.encode("unicode_escape").decode("ascii").replace('"', '\\"')
            return f'[stopped: stop string "{shown}"]'
        return None


def prefill(fwd, state: RunState, ids: list[int]) -> np.ndarray:
    """Run the prompt through the model in one batch; logits of its last token (V,)."""
    return fwd(state, ids)[0]


def decode_one_token(fwd, state: RunState, token: int) -> np.ndarray:
    return fwd(state, [token])[0]


def decode_n_tokens(fwd, state: RunState, logits: np.ndarray, n: int, params: SamplingParams,
                    stop_ids=frozenset(), stats: GenerationStats | None = None, history: list[int] | None = None,
                    ignore_eos: bool = False, limit_reason: str = "length") -> Iterator[int]:
    """Sample up to n tokens, yielding each as soon as it is chosen; stops at a stop token.

    `params` must be resolved (a concrete seed). `history`: the ids before these (the repeat penalty
    looks at them); generated ids are appended to it. `limit_reason`: the stop reason when n tokens
    have been generated ("length" for -n, "context" when n is the room left in the context)."""
    stats = GenerationStats() if stats is None else stats
    rng = np.random.default_rng(params.seed)
    history = [] if history is None else history
    banned = tuple(stop_ids) if ignore_eos else ()
    for i in range(n):
        token = sample(logits, params, rng, params.recent(history), banned)
        if token in stop_ids:
            stats.stop_reason = "eos"
            return
        stats.generated += 1
        history.append(token)
        yield token
        if i + 1 < n:
            # decode speed counts forward passes of one token, as llama.cpp's eval rate does
            t0 = time.perf_counter()
            logits = decode_one_token(fwd, state, token)
            stats.gen_tokens += 1
            stats.gen_seconds += time.perf_counter() - t0
    stats.stop_reason = limit_reason


def decode_text(tokens: Iterable[int], decoder, stops=(), stats: GenerationStats | None = None) -> Iterator[str]:
    """Text pieces of a token stream, cut before the first stop string; a partial match is held back.

    Closing the token iterator ends generation as soon as a stop string has appeared."""
    from tinyqmoe.model.stop import StopMatcher

    matcher = StopMatcher(list(stops)) if stops else None
    seen, emitted = [], 0  # all decoded text, and how much of it went out (to name the stop that matched)
    tokens = iter(tokens)
    try:
        for token in tokens:
            piece = decoder.push(token)
            if not piece:
                continue
            if matcher is None:
                yield piece
                continue
            seen.append(piece)
            emit, stopped = matcher.push(piece)
            emitted += len(emit)
            if emit:
                yield emit
            if stopped:
                if stats is not None:
                    stats.stop_reason = "stop"
                    stats.stop_string = _matched_stop("".join(seen), emitted, matcher.stops)
                return
        rest = matcher.flush() if matcher is not None else ""
        if rest:
            yield rest
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()


def _matched_stop(text: str, cut: int, stops) -> str | None:
    """The stop string StopMatcher cut `text` at: it starts at `cut`, and completes first."""
    here = [s for s in stops if text.find(s) == cut]
    return min(here, key=len) if here else None
