"""Batched log-likelihood scoring on the multi-sequence interface: shared prefixes run once.

A request is one question: its context ids, its continuations' ids, and the ids it may share
with other questions (for MMLU the subject's description and 5 shots; for ARC 5-shot the OLMES
shots). For a batch of requests:

  1. prefix     the KV cache of the shared ids is computed once and kept (one prefix at a time: MMLU
                questions come subject by subject); each question forks it. The shared part is the
                longest common prefix of the question's own context ids and the prefix ids, so the
                tokens fed to the model are exactly the context's (no boundary re-tokenization).
  2. questions  the questions' remaining context tokens in one forward_batch (several questions per
                pass over the weights when `max_rows` allows; by default one: see MAX_ROWS); the
                last row's logits score all single-token continuations (MMLU's " A".." D") at once.
  3. choices    continuations longer than one token continue from a fork of their question's cache,
                again all in one forward_batch.

Log-likelihoods are computed as Model.loglikelihood_ids computes them (the same rows of logits,
log-softmax in float64). `path` is the engine's arithmetic path for every forward, whatever the
batch holds. Eval uses "blocked" (BLAS products) with one question per forward: measured ~2x faster
than the per-row "stream" kernels on a question's ~100-token prefill (benchmarks/eval_prefix.py),
and a question's numbers then depend on nothing but the question and its prefix, so they are the
same in any run, shard or resume. ("stream" makes a row independent of its batch mates at any
max_rows; "blocked" with several questions per forward changes the rounding by ~1e-5 nats.)
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np


PATH = "blocked"
MAX_ROWS = 1  # new context rows per forward_batch; 1 = one question per forward (the fastest measured)


@dataclasses.dataclass
class Request:
    ctx: list[int]                 # context ids (BOS and truncation applied)
    conts: list[list[int]]         # continuation ids, each non-empty
    shared: list[int] = dataclasses.field(default_factory=list)  # ids other requests may share


@dataclasses.dataclass
class Scored:
    results: list[tuple[float, bool]]  # (log-likelihood, greedy) per continuation
    prefill_tokens: int                # tokens this question ran (its share of a new prefix included)
    seconds: float                     # its share of the batch's wall time


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def loglik_rows(logits: np.ndarray, cont: list[int]) -> tuple[float, bool]:
    """Sum of log p(cont[j]) over rows logits[j] (float64 log-softmax), and whether each is the argmax."""
    logits = logits.astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    logz = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    idx = np.arange(len(cont))
    return float(np.sum(logits[idx, cont] - logz)), bool(np.all(np.argmax(logits, axis=1) == np.asarray(cont)))


class BatchScorer:
    def __init__(self, model, path: str = PATH, max_rows: int = MAX_ROWS):
        self.model = model
        self.path = path
        self.max_rows = max_rows
        self._prefix_ids: list[int] = []
        self._prefix_state = None

    def _forward(self, states, token_lists, all_logits=False):
        return self.model.forward_batch(states, token_lists, all_logits=all_logits, path=self.path)

    def _fork_prefix(self, ids: list[int]):
        """A state holding `ids`, forked from the kept prefix; (state, tokens computed anew)."""
        cached = self._prefix_ids
        if self._prefix_state is None or common_prefix(cached, ids) < len(ids):
            state = self.model.new_state()
            self._forward([state], [ids])
            self._prefix_ids, self._prefix_state, new = list(ids), state, len(ids)
        else:
            new = 0
        state = self._prefix_state.fork()
        state.truncate(len(ids))
        return state, new

    def batches(self, requests: list[Request]):
        """Index ranges [i, j) of requests scored together: up to max_rows new context rows."""
        i = 0
        while i < len(requests):
            j, rows = i, 0
            while j < len(requests):
                r = requests[j]
                n = len(r.ctx) - min(common_prefix(r.shared, r.ctx), len(r.ctx) - 1)
                if j > i and rows + n > self.max_rows:
                    break
                rows += n
                j += 1
            yield i, j
            i = j

    def score(self, requests: list[Request]):
        """Yield (index, Scored) for every request, batch by batch, in order."""
        for i, j in self.batches(requests):
            yield from zip(range(i, j), self.score_batch(requests[i:j]))

    def score_batch(self, batch: list[Request]) -> list[Scored]:
        t0 = time.perf_counter()
        states, tokens, prefill = [], [], []
        for r in batch:
            if not r.ctx:
                raise ValueError("a context needs at least one token (start it with BOS)")
            n_shared = min(common_prefix(r.shared, r.ctx), len(r.ctx) - 1)
            if n_shared:
                state, new = self._fork_prefix(r.ctx[:n_shared])
            else:
                state, new = self.model.new_state(), 0
            states.append(state)
            tokens.append(r.ctx[n_shared:])
            prefill.append(new + len(r.ctx) - n_shared)
        last = [lg[0] for lg in self._forward(states, tokens)]
        results: list[list] = [[None] * len(r.conts) for r in batch]
        follow_states, follow_tokens, follow_at = [], [], []
        for q, r in enumerate(batch):
            for c, cont in enumerate(r.conts):
                if len(cont) == 1:
                    results[q][c] = loglik_rows(last[q][None, :], cont)
                else:
                    follow_states.append(states[q].fork())
                    follow_tokens.append(cont[:-1])
                    follow_at.append((q, c))
                    prefill[q] += len(cont) - 1
        if follow_states:
            rows = self._forward(follow_states, follow_tokens, all_logits=True)
            for (q, c), lg in zip(follow_at, rows):
                results[q][c] = loglik_rows(np.concatenate([last[q][None, :], lg]), batch[q].conts[c])
        seconds = (time.perf_counter() - t0) / len(batch)
        return [Scored(res, n, seconds) for res, n in zip(results, prefill)]
