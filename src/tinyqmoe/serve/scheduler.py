"""Continuous batching on one worker thread.

Up to `parallel` sequences run together: each step makes ONE batched forward pass in which every
decoding sequence adds its last token and prefilling sequences add a piece of their prompt (at most
`prefill_tokens` prompt tokens per step in all, so a long prompt never stalls the running streams for
long). Sequences join and leave between steps; each has its own KV cache and position. The pass uses
path="stream" (the per-row kernels), so a sequence's logits never depend on the rest of the batch:
its greedy text is the same batched or alone.

Requests wait in a bounded queue (QueueFull when full). A cancelled job (a client gone) leaves at the
next step boundary. The worker turns tokens into text and applies stop strings itself, so the
event loop only forwards events: ("text", str), ("done", finish_reason, usage), ("error", message).
Finished sequences' KV caches are kept (a few, LRU) so that the next turn of a chat, whose prompt
repeats the previous prompt and reply, prefills only what it adds.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
import threading
import traceback
from collections.abc import Callable

import numpy as np

from tinyqmoe.model.sampling import SamplingParams, sample
from tinyqmoe.model.stop import StopMatcher

PREFILL_TOKENS = 16    # prompt tokens per step, over all prefilling sequences
MIN_REUSE = 4          # shortest cached prefix worth reusing


class QueueFull(Exception):
    pass


@dataclasses.dataclass(eq=False)
class Job:
    """One request: prompt ids in, events out through `sink` (called on the worker thread)."""
    prompt: list[int]
    max_new: int
    params: SamplingParams
    sink: Callable[[tuple], None]
    stops: list[str] = dataclasses.field(default_factory=list)
    ignore_eos: bool = False
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Slot:
    """A running sequence: its job, KV cache, sampling state and text stream."""

    def __init__(self, job: Job, state, cached: list[int], tokenizer):
        self.job = job
        self.state = state
        self.ids = cached                 # ids whose keys and values are in `state`
        self.fed = len(cached)            # prompt tokens in the cache
        self.next_token = -1              # the sampled token to feed at the next step
        self.generated = 0
        self.rng = np.random.default_rng(job.params.seed)
        self.text = TextStream(tokenizer)
        self.stop = StopMatcher(job.stops)

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.job.prompt)


class TextStream:
    """Incremental detokenization: decodes a short window, never splits a UTF-8 character.

    Decoding from `prefix` (one piece back) rather than from `read` keeps what decoders do at the
    start of a text (SentencePiece drops a leading space) out of the difference.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0   # window start: decoding from here gives the same text as from the start
        self.read = 0     # ids already turned into emitted text

    def push(self, token: int) -> str:
        self.ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        before = self.tok.decode(self.ids[self.prefix: self.read])
        now = self.tok.decode(self.ids[self.prefix:])
        # a trailing U+FFFD is an incomplete character for up to 4 tokens (the longest UTF-8 sequence);
        # after that the bytes are invalid and come out as they are
        if len(now) <= len(before) or (now.endswith("\ufffd") and not final and len(self.ids) - self.read < 4):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(before):]


class Scheduler:
    def __init__(self, model, parallel: int = 4, queue: int = 64, keep_caches: int | None = None,
                 prefill_tokens: int = PREFILL_TOKENS):
        self.model = model
        self.parallel = parallel
        self.queue_limit = queue
        self.keep_caches = parallel if keep_caches is None else keep_caches
        self.prefill_tokens = prefill_tokens
        self.stop_ids = model.tokenizer.stop_ids
        self.steps = 0              # batched forward passes made
        self.reused_tokens = 0      # prompt tokens whose KV came from a kept cache
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Slot] = []
        self._kept: list[tuple[list[int], object]] = []   # (ids, state) of finished sequences, oldest first
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tinyqmoe-scheduler", daemon=True)
        self._thread.start()

    # ---- called from other threads
    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            free = self.parallel - len(self._active)
            if len(self._waiting) >= self.queue_limit + max(0, free):
                raise QueueFull(f"all {self.parallel} slots are busy and {len(self._waiting)} requests wait")
            self._waiting.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        job.cancel()
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
            self._cond.notify()

    def counts(self) -> dict:
        return {"active": len(self._active), "waiting": len(self._waiting), "parallel": self.parallel,
                "queue": self.queue_limit}

    def close(self, timeout: float = 30.0) -> None:
        """Cancel everything in flight and stop the worker (after its current step)."""
        with self._cond:
            self._stopping = True
            for job in self._waiting:
                job.sink(("error", "the server is shutting down"))
            self._waiting.clear()
            self._cond.notify()
        self._thread.join(timeout)

    # ---- the worker
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._active or self._waiting):
                    self._cond.wait()
                if self._stopping:
                    break
                self._admit()
            self._drop_cancelled()
            if not self._active:
                continue
            try:
                self._step()
            except Exception as exc:  # a failing pass (say, a corrupt chunk) ends the running sequences, not the server
                traceback.print_exc(file=sys.stderr)
                for slot in self._active:
                    slot.job.sink(("error", f"generation failed: {' '.join(str(exc).split())}"))
                self._active.clear()
        for slot in self._active:
            slot.job.sink(("error", "the server is shutting down"))
        self._active.clear()

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.parallel:
            job = self._waiting.popleft()
            if job.cancelled:
                continue
            state, cached = self._reuse(job.prompt)
            self._active.append(Slot(job, state, cached, self.model.tokenizer))

    def _reuse(self, prompt: list[int]):
        """A kept cache with the longest common prefix (at least one prompt token left to run), or a new one."""
        best, best_n = None, 0
        for i, (ids, _) in enumerate(self._kept):
            n = _common_prefix(ids, prompt, len(prompt) - 1)
            if n > best_n:
                best, best_n = i, n
        if best is None or best_n < MIN_REUSE:
            return self.model.new_state(), []
        _, state = self._kept.pop(best)
        state.truncate(best_n)
        self.reused_tokens += best_n
        return state, prompt[:best_n]

    def _drop_cancelled(self) -> None:
        for slot in [s for s in self._active if s.job.cancelled]:
            self._finish(slot, "cancelled")

    def _step(self) -> None:
        rows, budget = [], self.prefill_tokens
        for slot in self._active:
            if slot.prefilling:
                n = min(budget, len(slot.job.prompt) - slot.fed)
                if n <= 0:
                    continue
                budget -= n
                rows.append((slot, slot.job.prompt[slot.fed: slot.fed + n]))
            else:
                rows.append((slot, [slot.next_token]))
        logits = self.model.forward_batch([s.state for s, _ in rows], [t for _, t in rows], path="stream")
        self.steps += 1
        for (slot, tokens), lg in zip(rows, logits):
            slot.ids.extend(tokens)
            if slot.prefilling:
                slot.fed += len(tokens)
                if slot.prefilling:
                    continue
            self._next_token(slot, lg[-1])

    def _next_token(self, slot: Slot, logits: np.ndarray) -> None:
        job = slot.job
        token = sample(logits, job.params, slot.rng)
        if token in self.stop_ids and not job.ignore_eos:
            return self._finish(slot, "stop")
        slot.generated += 1
        emit, stopped = slot.stop.push(slot.text.push(token))
        if emit:
            job.sink(("text", emit))
        if stopped:
            return self._finish(slot, "stop")
        if slot.generated >= job.max_new:
            return self._finish(slot, "length")
        slot.next_token = token

    def _finish(self, slot: Slot, reason: str) -> None:
        job = slot.job
        if reason in ("stop", "length") and not slot.stop.stopped:
            tail, stopped = slot.stop.push(slot.text.flush())
            tail += "" if stopped else slot.stop.flush()
            reason = "stop" if stopped else reason
            if tail:
                job.sink(("text", tail))
        self._active.remove(slot)
        if self.keep_caches:
            self._kept.append((slot.ids, slot.state))
            del self._kept[: -self.keep_caches]
        job.sink(("done", reason, {"prompt_tokens": len(job.prompt), "completion_tokens": slot.generated}))


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    for x, y in zip(a[:limit], b[:limit]):
        if x != y:
            break
        n += 1
    return n
