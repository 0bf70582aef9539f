"""The Python API: `load()` a model, then `generate`, `stream`, `logits`, `loglikelihood_ids`."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tinyqmoe.errors import MemoryBudgetError, UsageError
from tinyqmoe.model.config import LlamaConfig
from tinyqmoe.model.forward import RunState, forward
from tinyqmoe.model.generate import GenerationStats, decode_n_tokens, prefill
from tinyqmoe.model.sampling import SamplingParams
from tinyqmoe.model.tokenizer import Tokenizer

# Long prefills multiply activations by blocks of dequantized (f32) weight rows of this many bytes:
# half the L2 measured by `tinyqmoe probe` when one is stored (the latency-based tiling of
# docs/tiling.md), else this default.
DEFAULT_BLOCK_BYTES = 1 << 20


def load(path_or_name: str | Path, weights: str = "int8", threads: int | None = None,
         max_memory: int | str | None = None, group: int | None = None, progress: bool = False,
         cache: bool = True, source: str = "auto", cold: bool = False, context: int | None = None) -> "Model":
    """Load a model: an HF directory, a .gguf or .tqm file, or the name `default`.

    weights:    "int8" (symmetric per output channel, or per `group` inputs) or "f32" (reference);
                a .tqm container runs the weights it holds (4-bit and ternary widened to int8 exactly).
    cache:      int8 weights of a float checkpoint are kept as a raw .tqm under the cache directory,
                so later loads map them instead of re-quantizing.
    max_memory: a peak-RSS budget ("300MB", bytes): picks the fastest weight source that fits
                (resident, streamed, fused), or fails before loading with the minimum that would work.
    source:     "auto" or one of resident | streamed | fused (int8 containers and cached int8 weights).
    cold:       streamed/fused sources drop the file's pages after reading (every token reads storage).
    context:    the longest sequence (prompt + generated) to budget the KV cache for (default 1024
                when a budget is given, else the model's maximum).
    """
    from tinyqmoe.weights.budget import choose_source, estimate, parse_size
    from tinyqmoe.locate import is_container, resolve
    from tinyqmoe.weights.sources import SOURCES
    from tinyqmoe.weights.linear import WEIGHT_KINDS
    from tinyqmoe.runtime import set_threads

    if weights not in WEIGHT_KINDS:
        raise UsageError(f"unknown weights kind {weights!r} (choose from {', '.join(WEIGHT_KINDS)})")
    if source not in ("auto",) + SOURCES:
        raise UsageError(f"unknown weight source {source!r} (choose auto, {', '.join(SOURCES)})")
    budget = None if max_memory is None else parse_size(max_memory)
    if (budget is not None or source in ("streamed", "fused")) and weights == "f32":
        raise UsageError("memory budgets and streamed/fused sources run int8 weights, not f32")
    n_threads = set_threads(threads)
    path = resolve(path_or_name)
    given_container = is_container(path)
    t0 = time.perf_counter()
    if not given_container and (weights == "f32" or not cache):
        if budget is not None or source in ("streamed", "fused"):
            raise UsageError("streamed/fused sources and memory budgets need the int8 cache (cache=True)")
        model = _load_checkpoint(path, str(path_or_name), weights, group, progress)
    else:
        tqm = path if given_container else _int8_cache(path, group, progress)
        from tinyqmoe.compress.reader import open_container

        container = open_container(tqm)
        if container.tokenizer is None:
            raise UsageError("container has no tokenizer", tqm)
        tokenizer = Tokenizer(container.tokenizer)  # before the budget: its memory is measured, not guessed
        ctx = min(container.config.max_seq_len, context or (1024 if budget is not None else 1 << 62))
        if budget is not None and source == "auto":
            source = choose_source(container, budget, ctx, n_threads).source
        elif budget is not None:
            forced = estimate(container, source, ctx, n_threads)
            if forced.total > budget:
                raise MemoryBudgetError(f"source {source} needs about {forced.total // 10**6} MB "
                                        f"({forced.describe()}), over the budget of {budget // 10**6} MB", tqm)
        elif source == "auto":
            source = "resident"
        model = _load_container(container, tokenizer, str(path_or_name), progress, source, n_threads, cold)
        if not given_container:
            model.weights_kind = "int8"
        model.max_context = ctx
        model.source = source
    model.load_seconds = time.perf_counter() - t0
    model.threads = n_threads
    return model


def _load_checkpoint(path: Path, name: str, weights: str, group: int | None, progress: bool) -> "Model":
    from tinyqmoe.formats.load import open_checkpoint
    from tinyqmoe.weights.linear import weights_from_checkpoint

    with open_checkpoint(path) as ckpt:
        if ckpt.tokenizer is None:
            raise UsageError("model has no tokenizer (tokenizer.json)", path)
        bar = _progress_bar(ckpt.config.n_layers, f"loading {path.name}") if progress else None
        w = weights_from_checkpoint(ckpt, weights, group, progress=bar)
        if bar:
            bar(None, None)
        return Model(name, ckpt.config, Tokenizer(ckpt.tokenizer), w, weights)


def _load_container(container, tokenizer: Tokenizer, name: str, progress: bool, source: str = "resident",
                    threads: int = 1, cold: bool = False) -> "Model":
    from tinyqmoe.weights.sources import FusedSource, StreamedSource
    from tinyqmoe.weights.linear import weights_from_container

    c = container
    if source == "resident":
        bar = _progress_bar(c.config.n_layers, f"loading {c.path.name}") if progress else None
        with c:
            w = weights_from_container(c, threads, progress=bar)
        if bar:
            bar(None, None)
    else:
        w = (StreamedSource if source == "streamed" else FusedSource)(c, threads=threads, cold=cold)
    model = Model(name, c.config, tokenizer, w, "tqm")
    model.bits_per_weight = _container_bits(c)
    return model


def _container_bits(c) -> float:
    """Quantized bits per weight of the 2-D tensors, scales included (before the codec)."""
    n = bits = 0
    for name in c.names:
        e = c.tensor(name)
        if len(e.shape) == 2:
            n += e.shape[0] * e.shape[1]
            bits += 8 * (e.raw_bytes + (e.scale_size if e.qtype != "f32" else 0))
    return bits / n


def _int8_cache(path: Path, group: int | None, progress: bool) -> Path:
    """The raw int8 .tqm of a float checkpoint in the cache directory, written once."""
    import hashlib

    from tinyqmoe.assets import cache_dir
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint

    files = sorted(path.glob("*")) if path.is_dir() else [path]
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())
    digest = hashlib.sha256(f"{key}|group={group}|v1".encode()).hexdigest()[:16]
    target = cache_dir() / "int8" / f"{path.stem}-{digest}.tqm"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_checkpoint(path) as ckpt:
            if ckpt.tokenizer is None:
                raise UsageError("model has no tokenizer (tokenizer.json)", path)
            c = ckpt.config
            for n_in in {c.dim, c.q_dim, c.ffn_dim}:
                if group and n_in % group:
                    raise UsageError(f"group size {group} does not divide the input dimension {n_in}", path)
            opts = CompressOptions(bits=8, group=group or 0, codec="raw", stats=False)
            write_container(ckpt, target, opts, progress=progress)
    return target


class Model:
    def __init__(self, name: str, config: LlamaConfig, tokenizer: Tokenizer, weights, weights_kind: str):
        self.name = name
        self.config = config
        self.tokenizer = tokenizer
        self.weights = weights
        self.weights_kind = weights_kind
        self.last_stats = GenerationStats()
        self.load_seconds = 0.0
        self.threads = 1
        self._bits_per_weight = None
        self.max_context = config.max_seq_len   # tokens the KV cache may hold (a budget lowers it)
        self.source = "resident"
        from tinyqmoe.runtime import stored_l2_bytes

        l2 = stored_l2_bytes()
        self.block_bytes = l2 // 2 if l2 else DEFAULT_BLOCK_BYTES

    # ---- sizes
    @property
    def bits_per_weight(self) -> float:
        """Bits per parameter of the linear layers, scales included (a container's own figure if set)."""
        if self._bits_per_weight is not None:
            return self._bits_per_weight
        w = self.weights
        lins = [w.embed] + [x for l in w.layers for x in (l.wqkv, l.wo, l.w_gate_up, l.w_down)]
        if w.lm_head is not w.embed:
            lins.append(w.lm_head)
        n = sum(x.shape[0] * x.shape[1] for x in lins)
        return 8.0 * sum(x.nbytes for x in lins) / n

    @bits_per_weight.setter
    def bits_per_weight(self, value: float) -> None:
        self._bits_per_weight = value

    def new_state(self, capacity: int = 256) -> RunState:
        return RunState(self.config, min(capacity, self.max_context), limit=self.max_context)

    def close(self) -> None:
        """Stop the background threads of a streamed or fused source (resident weights need nothing)."""
        if hasattr(self.weights, "close"):
            self.weights.close()

    # ---- scoring
    def logits(self, ids: list[int]) -> np.ndarray:
        """float32 [len(ids), V]: the full causal forward pass over `ids` from an empty cache."""
        self._check_ids(ids)
        return forward(self.weights, self.new_state(len(ids)), ids, all_logits=True, block_bytes=self.block_bytes)

    def loglikelihood_ids(self, context_ids: list[int], continuations: list[list[int]]) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), is it the greedy continuation) for each continuation.

        The context runs once; each continuation continues from its KV cache. A continuation only
        writes cache positions after the context, so rewinding `state.pos` restores the context.
        """
        if not context_ids:
            raise UsageError("loglikelihood needs a non-empty context (start it with BOS)")
        self._check_ids(context_ids)
        longest = max((len(c) for c in continuations), default=0)
        state = self.new_state(len(context_ids) + longest)
        last = forward(self.weights, state, context_ids, block_bytes=self.block_bytes)[0]
        n_ctx = state.pos
        results = []
        for cont in continuations:
            if not cont:
                results.append((0.0, True))
                continue
            self._check_ids(cont)
            state.pos = n_ctx
            rows = [last[None, :]]
            if len(cont) > 1:
                rows.append(forward(self.weights, state, cont[:-1], all_logits=True, block_bytes=self.block_bytes))
            logits = np.concatenate(rows).astype(np.float64)
            logz = np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)) + logits.max(axis=1)
            idx = np.arange(len(cont))
            lp = float(np.sum(logits[idx, cont] - logz))
            greedy = bool(np.all(np.argmax(logits, axis=1) == np.asarray(cont)))
            results.append((lp, greedy))
        return results

    def loglikelihood(self, context: str, continuations: list[str]) -> list[tuple[float, bool]]:
        """String-level scoring with lm-evaluation-harness tokenization conventions."""
        from tinyqmoe.eval import loglikelihood

        return loglikelihood(self, context, continuations)

    # ---- generation
    def stream_ids(self, ids: list[int], max_new_tokens: int = 128, temperature: float = 0.0, top_k: int = 0,
                   top_p: float = 1.0, seed: int | None = None, state: RunState | None = None) -> Iterator[int]:
        """Generate after `ids`. With `state`, `ids` continue the sequence already in its KV cache."""
        self._check_ids(ids)
        if not ids:
            raise UsageError("empty prompt")
        params = SamplingParams(temperature, top_k, top_p, seed)
        stats = self.last_stats = GenerationStats()
        if state is None:
            state = self.new_state(len(ids) + max_new_tokens)
        n = min(max_new_tokens, self.max_context - state.pos - len(ids))
        if n < 0:
            raise UsageError(f"prompt of {state.pos + len(ids)} tokens exceeds the context of {self.max_context}")
        t0 = time.perf_counter()
        logits = prefill(self.weights, state, ids, self.block_bytes)
        stats.prompt_tokens, stats.prompt_seconds = len(ids), time.perf_counter() - t0
        yield from decode_n_tokens(self.weights, state, logits, n, params, self.tokenizer.stop_ids, stats)

    def chat_session(self, system: str | None = None) -> "ChatSession":
        return ChatSession(self, system)

    def stream(self, prompt: str, max_new_tokens: int = 128, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, chat: bool = False) -> Iterator[str]:
        """Yield text pieces as tokens are generated. `chat=True` wraps the prompt in the chat template."""
        if chat:
            ids = self.tokenizer.encode_chat([{"role": "user", "content": prompt}])
        else:
            ids = self.tokenizer.encode(prompt)
        dec = self.tokenizer.stream_decoder()
        for token in self.stream_ids(ids, max_new_tokens, temperature, top_k, top_p, seed):
            piece = dec.push(token)
            if piece:
                yield piece

    def generate(self, prompt: str, max_new_tokens: int = 128, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None, chat: bool = False) -> str:
        return "".join(self.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed, chat))

    def _check_ids(self, ids) -> None:
        V = self.config.vocab_size
        bad = [i for i in ids if not 0 <= int(i) < V]
        if bad:
            raise UsageError(f"token id {bad[0]} is outside the vocabulary (0..{V - 1})")


class ChatSession:
    """A conversation whose KV cache persists: each turn prefills only the tokens it adds."""

    def __init__(self, model: Model, system: str | None = None):
        self.model = model
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.state = model.new_state()
        self.cached: list[int] = []  # the ids whose keys and values are in self.state

    def send(self, text: str, **sampling) -> Iterator[str]:
        """Add a user turn and stream the assistant's reply."""
        tok = self.model.tokenizer
        self.messages.append({"role": "user", "content": text})
        ids = tok.encode_chat(self.messages)
        common = 0
        for a, b in zip(self.cached, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # prefill at least one token to get logits
        self.state.pos = common
        reply: list[int] = []
        dec = tok.stream_decoder()
        for token in self.model.stream_ids(ids[common:], state=self.state, **sampling):
            reply.append(token)
            piece = dec.push(token)
            if piece:
                yield piece
        self.cached = (ids + reply)[: self.state.pos]
        self.messages.append({"role": "assistant", "content": tok.decode(reply)})


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="layer", leave=False, file=None)

    def update(done, _total):
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return update
