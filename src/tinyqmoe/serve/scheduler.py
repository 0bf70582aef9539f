"""Continuous batching on one worker thread.

Up to `parallel` sequences run together. A prompt runs in chunks that start at multiples of
PREFILL_CHUNK (its last one shorter): a chunk of more than SMALL_BATCH tokens runs alone, through the
prompt path (the int8 GEMM with resident int8 weights, blocked BLAS otherwise), one chunk per step
between the decode steps, so running streams keep going. With resident int8 weights (the fused path,
kernels/layer.py) the decode step is ONE compiled call: every decoding sequence adds its last token,
and prompts whose next chunk is short (a prompt's tail, at most SMALL_BATCH tokens) add it, oldest
first, up to FUSED_PREFILL rows, so the weights are read once per step for all of it (where the fused
rows multiply int16 tokens, kernels/rowdot_a16.py, whole chunks join it too: no prompt path). The fused tiles
sum each token in an order the code fixes (kernels/rowdot.py), and the GEMM sums each token's blocks
exactly in int32 (kernels/gemm_i8.py), so no row's numbers depend on the rest of its call; and which
path a chunk takes depends on its length only. Other weight sources decode with path="stream" (per-row
kernels, the same independence). So a sequence's greedy (or seeded) text is the same batched or
alone. Sequences join and leave between steps; each has its own KV cache and position.

Requests wait in a bounded queue (QueueFull when full). A cancelled job (a client gone) leaves at the
next step boundary. The worker turns tokens into text and applies stop strings itself, so the
event loop only forwards events: ("text", str), ("done", finish_reason, usage), ("error", message).
Finished sequences' KV caches are kept (a few, LRU) so that the next turn of a chat, whose prompt
repeats the previous one, prefills only what it adds. Only whole chunks of the previous prompt are
reused, the positions a fresh run would compute identically, so reuse never changes an answer.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
import threading
import traceback
from collections.abc import Callable

import numpy as np

from tinyqmoe.kernels.matvec import SMALL_BATCH
from tinyqmoe.model.sampling import SamplingParams, sample
from tinyqmoe.model.stop import StopMatcher

PREFILL_CHUNK = 32     # prompt tokens per chunk: more than SMALL_BATCH, so a whole chunk takes the prompt path
FUSED_PREFILL = 48     # with the fused path: rows of prompt tails per step beside the decoding tokens


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

    def __init__(self, job: Job, state, reused: int, tokenizer):
        self.job = job
        self.state = state
        self.fed = reused                 # prompt tokens in the cache
        self.next_token = -1              # the sampled token to feed at the next step
        self.generated = 0
        self.rng = np.random.default_rng(job.params.seed)
        self.text = TextStream(tokenizer)
        self.stop = StopMatcher(job.stops)

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.job.prompt)

    def chunk_end(self, size: int) -> int:
        """Where the prompt's next chunk ends: the next multiple of `size`, or the prompt's end."""
        return min(len(self.job.prompt), (self.fed // size + 1) * size)

    @property
    def long_chunk(self) -> bool:
        """Is the prompt's next chunk longer than SMALL_BATCH tokens (run alone, through the prompt path)?"""
        return self.prefilling and self.chunk_end(PREFILL_CHUNK) - self.fed > SMALL_BATCH


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
    def __init__(self, model, parallel: int = 4, queue: int = 64, keep_caches: int | None = None):
        self.model = model
        self.parallel = parallel
        self.queue_limit = queue
        self.keep_caches = parallel if keep_caches is None else keep_caches
        # where the fused call multiplies int16 tokens, long prompt chunks join it too (Model.fused_prompt_chunks)
        self.fused_prompts = getattr(model, "fused_prompt_chunks", False)
        self.stop_ids = model.tokenizer.stop_ids
        self.steps = 0              # batched forward passes made
        self.reused_tokens = 0      # prompt tokens whose KV came from a kept cache
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Slot] = []
        self._kept: list[tuple[list[int], object]] = []   # (reusable ids, state) of finished sequences, oldest first
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
            state, reused = self._reuse(job.prompt)
            self._active.append(Slot(job, state, reused, self.model.tokenizer))

    def _reuse(self, prompt: list[int]):
        """A kept cache sharing the most whole chunks with `prompt` (one token at least left to run), or a new one."""
        best, best_n = None, 0
        for i, (ids, _) in enumerate(self._kept):
            n = _common_prefix(ids, prompt, len(prompt) - 1) // PREFILL_CHUNK * PREFILL_CHUNK
            if n > best_n:
                best, best_n = i, n
        if best is None:
            return self.model.new_state(), 0
        _, state = self._kept.pop(best)
        state.truncate(best_n)
        self.reused_tokens += best_n
        return state, best_n

    def _drop_cancelled(self) -> None:
        for slot in [s for s in self._active if s.job.cancelled]:
            self._finish(slot, "cancelled")

    def _step(self) -> None:
        if self.model.decode_path == "fused":
            return self._fused_step()
        decoding = [s for s in self._active if not s.prefilling]
        prefilling = [s for s in self._active if s.prefilling]
        if prefilling:   # the oldest waiting prompt runs its next chunk
            self._prefill_chunk(prefilling[0])
        if decoding:
            logits = self.model.forward_batch([s.state for s in decoding], [[s.next_token] for s in decoding],
                                              path="stream")
            for slot, lg in zip(decoding, logits):
                self._next_token(slot, lg[-1])
        self.steps += 1

    def _fused_step(self) -> None:
        """The next long prompt chunk alone (the prompt path: about twice the f32 tiles' rate per
        token at 32 rows, kernels/gemm_i8.py), then one fused call for everything else: each decoding
        sequence's token and the tails of waiting prompts, oldest first, up to FUSED_PREFILL rows. Where
        the fused call multiplies int16 tokens (`fused_prompts`), faster than the GEMM, long chunks
        join it as tails do and nothing runs alone. The fused path's rows are independent of each other,
        so grouping changes no sequence's numbers, only how often the weights are read."""
        long = None if self.fused_prompts else next((s for s in self._active if s.long_chunk), None)
        if long is not None:
            self._prefill_chunk(long)   # may finish the prompt: then it decodes below, in this step
        decoding = [s for s in self._active if not s.prefilling]
        states = [s.state for s in decoding]
        tokens = [[s.next_token] for s in decoding]
        tails, rows = [], 0
        for slot in self._active:
            if not slot.prefilling or (slot.long_chunk and not self.fused_prompts):
                continue
            end = slot.chunk_end(PREFILL_CHUNK)
            if tails and rows + end - slot.fed > FUSED_PREFILL:
                break
            tails.append((slot, end))
            rows += end - slot.fed
            states.append(slot.state)
            tokens.append(slot.job.prompt[slot.fed:end])
        if states:
            logits = self.model.forward_batch(states, tokens, path="stream")
            for slot, lg in zip(decoding, logits):
                self._next_token(slot, lg[-1])
            for (slot, end), lg in zip(tails, logits[len(decoding):]):
                slot.fed = end
                if not slot.prefilling:
                    self._next_token(slot, lg[-1])
        self.steps += 1

    def _prefill_chunk(self, slot: Slot) -> None:
        """The prompt's tokens up to the next multiple of PREFILL_CHUNK, alone in one call."""
        end = slot.chunk_end(PREFILL_CHUNK)
        tokens = slot.job.prompt[slot.fed: end]
        logits = self.model.forward_batch([slot.state], [tokens], path="auto")[0]
        slot.fed = end
        if not slot.prefilling:
            self._next_token(slot, logits[-1])

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
        if self.keep_caches:   # whole prompt chunks only: the positions a fresh run computes the same way
            whole = slot.fed // PREFILL_CHUNK * PREFILL_CHUNK
            self._kept.append((job.prompt[:whole], slot.state))
            del self._kept[: -self.keep_caches]
        job.sink(("done", reason, {"prompt_tokens": len(job.prompt), "completion_tokens": slot.generated}))


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    for x, y in zip(a[:limit], b[:limit]):
        if x != y:
            break
        n += 1
    return n
