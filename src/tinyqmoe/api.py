"""The Python API: `load()` a model, then `generate`, `stream`, `logits`, `loglikelihood_ids`.

`load()` first resolves what to load into one frozen `LoadPlan` (`plan_load`: file kind, weights,
source, budget, threads), refusing contradictions with a one-line error, then `build()` makes the
`Model` from it: a Runtime (threads, pool), a tokenizer, a weight source, nothing patched afterwards.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tinyqmoe.errors import MemoryBudgetError, UsageError
from tinyqmoe.kernels.matvec import SMALL_BATCH
from tinyqmoe.model.config import LlamaConfig
from tinyqmoe.model.forward import forward_batch
from tinyqmoe.model.generate import GenerationStats, decode_n_tokens, decode_text, prefill
from tinyqmoe.model.sampling import SamplingParams
from tinyqmoe.model.state import STORAGE_BYTES, Activations, RunState, check_cache_type
from tinyqmoe.model.tokenizer import Tokenizer, container_tokenizer
from tinyqmoe.runtime import Runtime
from tinyqmoe.weights.source import SOURCES

WEIGHTS = ("int8", "f32", "native")


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """Everything `build` needs, resolved and checked before any weight is read."""
    name: str               # as the user gave it
    path: Path              # the file or directory it resolved to
    kind: str               # "hf" | "gguf" | "tqm"
    weights: str            # "int8" | "f32" | "native" (a GGUF's own blocks) | "stored" (a container's own)
    group: int | None       # int8 scale group when quantizing a float checkpoint
    cache: bool             # keep a float checkpoint's int8 weights as a raw .tqm in the cache
    source: str             # "auto" | resident | fused | streamed
    budget: int | None      # peak-RSS budget in bytes
    context: int | None     # positions to hold (None: 1024 under a budget, else the model's maximum; 0: the maximum)
    threads: int | None
    cold: bool
    progress: bool
    storage_bw: float | None = None   # emulated storage speed, bytes per second (streamed/fused)
    sequences: int = 1                # sequences held at once (a server's slots): the budget holds their KV
    cache_type_k: str = "f32"         # how KV caches hold keys: "f32" | "f16"
    cache_type_v: str = "f32"         # and values

    @property
    def reads_container(self) -> bool:
        """A .tqm runs from its reader: the given file, or the int8 cache of a float checkpoint."""
        return self.kind == "tqm" or (self.weights in ("int8", "native") and self.cache)


def plan_load(path_or_name: str | Path, weights: str | None = None, threads: int | None = None,
              max_memory: int | str | None = None, group: int | None = None, progress: bool = False,
              cache: bool = True, source: str = "auto", cold: bool = False,
              context: int | None = None, storage_bw: int | str | None = None, sequences: int = 1,
              cache_type_k: str = "f32", cache_type_v: str = "f32") -> LoadPlan:
    """Resolve and check the arguments of `load` (see there) into a LoadPlan."""
    from tinyqmoe.locate import model_kind, resolve
    from tinyqmoe.units import parse_size

    if weights is not None and weights not in WEIGHTS:
        raise UsageError(f"unknown weights kind {weights!r} (choose from {', '.join(WEIGHTS)})")
    if source not in ("auto",) + SOURCES:
        raise UsageError(f"unknown weight source {source!r} (choose auto, {', '.join(SOURCES)})")
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")
    if sequences < 1:
        raise UsageError(f"sequences must be >= 1, got {sequences}")
    if group is not None and group < 1:
        raise UsageError(f"group must be >= 1, got {group}")
    if context is not None and context < 0:
        raise UsageError(f"context must be >= 0 (0: the model's own), got {context}")
    check_cache_type(cache_type_k, "key cache type")
    check_cache_type(cache_type_v, "value cache type")
    budget = None if max_memory is None else parse_size(max_memory, "max_memory")
    bw = None if storage_bw is None else parse_size(str(storage_bw).removesuffix("/s"), "storage_bw")
    if bw is not None and bw <= 0:
        raise UsageError(f"storage bandwidth must be positive, got {storage_bw!r}")
    path = resolve(path_or_name)
    kind = model_kind(path)
    if kind is None:
        from tinyqmoe.errors import ModelNotFound
        raise ModelNotFound("not a model: expected an HF directory (config.json + *.safetensors), "
                            "a .gguf or a .tqm file", path)
    if weights == "native":
        if kind != "gguf":
            raise UsageError("weights=native runs a GGUF file's own quantized blocks; this model is not a .gguf "
                             "(use int8 or f32; a .tqm container runs the weights it holds)", path)
        if group is not None or not cache:
            raise UsageError("weights=native keeps the file's own groups of 32, through the weights cache: "
                             "drop group / --group and --no-cache", path)
    if kind == "tqm":
        if weights == "f32":
            raise UsageError("a .tqm container holds quantized weights and runs them as int8; weights=f32 "
                             "needs a float checkpoint (an HF directory or a .gguf file)", path)
        if group is not None:
            raise UsageError("group applies when quantizing a float checkpoint; a container's groups are fixed",
                             path)
        weights = "stored"
    weights = weights or "int8"
    plan = LoadPlan(str(path_or_name), path, kind, weights, group, cache, source, budget, context,
                    threads, cold, progress, bw, sequences, cache_type_k, cache_type_v)
    chunked = budget is not None or source in ("streamed", "fused")
    if chunked and weights == "f32":
        raise UsageError("memory budgets and streamed/fused sources run int8 weights, not f32")
    if chunked and not plan.reads_container:
        raise UsageError("streamed/fused sources and memory budgets need the int8 cache (cache=True)")
    for flag, given in (("cold", cold), ("storage_bw", bw is not None)):
        if given and (source == "resident" or not chunked):
            raise UsageError(f"{flag} applies to the streamed and fused sources (give source= or max_memory=)")
    return plan


def load(path_or_name: str | Path, weights: str | None = None, threads: int | None = None,
         max_memory: int | str | None = None, group: int | None = None, progress: bool = False,
         cache: bool = True, source: str = "auto", cold: bool = False, context: int | None = None,
         storage_bw: int | str | None = None, sequences: int = 1,
         cache_type_k: str = "f32", cache_type_v: str = "f32") -> "Model":
    """Load a model: an HF directory, a .gguf or .tqm file, or the name `default`.

    weights:    for float checkpoints, "int8" (default: symmetric per output channel, or per `group`
                inputs) or "f32" (reference); for a GGUF whose linears are all Q8_0, or Q4_0 / Q4_1,
                "native" runs its own blocks (int8 / uint4 in groups of 32, uint4 kept packed); a .tqm
                container runs the weights it holds, so "f32" and `group` are refused for it.
    threads:    threads for the kernels and the pool (default: all cores).
    max_memory: a peak-RSS budget for the whole process ("300MB", bytes): picks the fastest weight
                source that fits (resident, fused, streamed), or fails before loading with the
                minimum that would work.
    cache:      int8 weights of a float checkpoint are kept as a raw .tqm under the cache directory,
                so later loads read them instead of re-quantizing.
    source:     "auto" or one of resident | fused | streamed (containers and cached int8 weights).
    cold:       streamed/fused sources drop the file's pages after reading (every token reads storage).
    context:    the longest sequence (prompt + generated) to hold (default 1024 when a budget is
                given, else the model's maximum; 0 means the model's maximum).
    storage_bw: emulate storage of this speed ("90MB/s", bytes per second) for the streamed and fused
                sources: a warm page cache plus a byte-rate throttle on every read (docs/streaming.md).
    sequences:  how many sequences of `context` positions will be held at once (a server's slots): the
                budget accounts for the KV caches of all of them.
    cache_type_k, cache_type_v: how the KV caches hold keys and values: "f32" (default: the reference
                numbers) or "f16" (half the memory, llama.cpp's default; needs F16C).
    """
    return build(plan_load(path_or_name, weights, threads, max_memory, group, progress, cache, source, cold,
                           context, storage_bw, sequences, cache_type_k, cache_type_v))


def build(plan: LoadPlan) -> "Model":
    """Make the Model a LoadPlan describes."""
    t0 = time.perf_counter()
    rt = Runtime.create(plan.threads)
    try:
        if plan.reads_container:
            model = _from_container(plan, rt)
        else:
            model = _from_checkpoint(plan, rt)
    except BaseException:
        rt.close()
        raise
    model.load_seconds = time.perf_counter() - t0
    return model


def _context(context: int | None, own: int, budget: int | None) -> int:
    """Positions the KV cache may hold (docs/conventions.md): 0 = the model's own; None = the model's own,
    or 1024 under a memory budget; more than the model's own is an error."""
    if context is not None and not 0 <= context <= own:
        raise UsageError(f"context {context}: expected 1..{own} (the positions this model has), "
                         f"or 0 for all of them")
    if context:
        return context
    return min(own, 1024) if context is None and budget is not None else own


def _from_checkpoint(plan: LoadPlan, rt: Runtime) -> "Model":
    from tinyqmoe.formats.load import open_checkpoint
    from tinyqmoe.weights.resident import from_checkpoint

    with open_checkpoint(plan.path) as ckpt:
        if ckpt.tokenizer is None:
            raise UsageError("model has no tokenizer (tokenizer.json)", plan.path)
        tokenizer = Tokenizer(ckpt.tokenizer, plan.path)
        bar = _progress_bar(ckpt.config.n_layers, f"loading {plan.path.name}") if plan.progress else None
        w = from_checkpoint(ckpt, plan.weights, plan.group, progress=bar)
        if bar:
            bar(None, None)
        ctx = _context(plan.context, ckpt.config.max_seq_len, None)
        return Model(plan.name, ckpt.config, tokenizer, w, rt, weights_kind=plan.weights, source="resident",
                     max_context=ctx, bits_per_weight=_weights_bits(w),
                     cache_types=(plan.cache_type_k, plan.cache_type_v))


def _from_container(plan: LoadPlan, rt: Runtime) -> "Model":
    from tinyqmoe import warmup
    from tinyqmoe.compress.reader import Container
    from tinyqmoe.weights import resident
    from tinyqmoe.weights.budget import choose_source, estimate, mb, rows_within
    from tinyqmoe.weights.fused import FusedSource
    from tinyqmoe.weights.streamed import StreamedSource

    native = plan.weights == "native"
    if plan.kind != "tqm" and plan.budget is not None and not _int8_cache_path(plan.path, plan.group, native).exists():
        warmup.int8_cache_in_child(plan.path, plan.group, plan.progress, native)   # its peak is the child's, not ours
    tqm = plan.path if plan.kind == "tqm" else _int8_cache(plan.path, plan.group, plan.progress, native)
    if plan.budget is not None:   # LLVM's pages come and go before the header and tokenizer, not on top
        warmup.start_llvm()
    reader = Container(tqm, cold=plan.cold, storage_bw=plan.storage_bw)
    try:
        if reader.tokenizer is None:
            raise UsageError("container has no tokenizer", tqm)
        tokenizer = container_tokenizer(reader, tqm)  # before the budget: its memory is measured, not guessed
        cfg = reader.config
        ctx = _context(plan.context, cfg.max_seq_len, plan.budget)
        source = plan.source
        kv_bytes = (STORAGE_BYTES[plan.cache_type_k], STORAGE_BYTES[plan.cache_type_v])
        max_rows = None
        if plan.budget is not None and source == "auto":
            allowed = tuple(s for s in SOURCES if not ((plan.cold or plan.storage_bw) and s == "resident"))
            chosen = choose_source(reader, plan.budget, ctx, rt.threads, allowed, plan.name, kv_bytes=kv_bytes,
                                   sequences=plan.sequences)
            source, max_rows = chosen.source, rows_within(plan.budget, chosen, cfg)
        elif plan.budget is not None:
            forced = estimate(reader, source, ctx * plan.sequences, rt.threads, kv_bytes=kv_bytes)
            if forced.total > plan.budget:
                raise MemoryBudgetError(f"source {source} needs about {mb(forced.total)} "
                                        f"({forced.describe()}), over the budget of {mb(plan.budget)}", plan.name)
            max_rows = rows_within(plan.budget, forced, cfg)
        elif source == "auto":
            source = "resident"
        if plan.budget is not None:   # compile the kernels in a child: LLVM's memory is not given back
            cache_types = (plan.cache_type_k, plan.cache_type_v)
            warmup.kernels_in_child(reader, source, rt.threads, cache_types)
            warmup.load_kernels(reader, source, cache_types)   # before the weights, library pages dropped after each
        if source == "resident":
            bar = _progress_bar(cfg.n_layers, f"loading {tqm.name}") if plan.progress else None
            w = resident.from_container(reader, rt, progress=bar)
            if bar:
                bar(None, None)
            reader.close()
        else:
            w = (StreamedSource if source == "streamed" else FusedSource)(reader, rt)
    except BaseException:
        reader.close()
        raise
    kind = "tqm" if plan.kind == "tqm" else plan.weights
    model = Model(plan.name, cfg, tokenizer, w, rt, weights_kind=kind, source=source, max_context=ctx,
                  bits_per_weight=_container_bits(reader), cache_types=(plan.cache_type_k, plan.cache_type_v),
                  max_rows=max_rows)
    if plan.kind == "tqm":
        model.container_path = Path(plan.path)
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


def _weights_bits(w) -> float:
    """Bits per parameter of resident linear layers, scales included."""
    lins = [w.embed] + [x for l in w.layers for x in (l.wqkv, l.wo, l.w_gate_up, l.w_down)]
    if w.lm_head is not w.embed:
        lins.append(w.lm_head)
    n = sum(x.shape[0] * x.shape[1] for x in lins)
    return 8.0 * sum(x.nbytes for x in lins) / n


def _keeps_q8_0_blocks(ckpt, group: int | None) -> bool:
    """Does the int8 cache keep the file's own int8 blocks? Yes for a GGUF whose quantized layers are
    all Q8_0, loaded with the default grouping: its int8 cache then has one f16 scale per 32 inputs,
    and quantizing a Q8_0 block (d * q, q in -127..127 with |q| = 127 where the block peaks, as
    llama.cpp writes it) again gives back exactly d and q, so the weights run as stored in the file
    (8.5 bits/weight, like Q8_0) instead of re-quantized per channel (tests/test_gguf_loader.py)."""
    if group is not None or Path(ckpt.path).suffix.lower() != ".gguf":
        return False
    types = _quantized_source_types(ckpt)
    return bool(types) and set(types.values()) == {"q8_0"}


def _quantized_source_types(ckpt, embeddings: bool = True) -> dict[str, str | None]:
    """The tensors the int8 cache quantizes (the embedding / LM head too unless `embeddings` is False)
    and how the file stores each ("q8_0", "q4_1", "bf16", ...)."""
    from tinyqmoe.compress.writer import EMBEDDING_NAMES, CompressOptions, is_quantized_name

    opts = CompressOptions(bits=8, codec="raw")
    return {n: ckpt.source_dtypes.get(n) for n in ckpt.names if is_quantized_name(n, ckpt.shapes[n], opts)
            and (embeddings or n not in EMBEDDING_NAMES)}


def _native_options(ckpt):
    """CompressOptions that keep a GGUF's own blocks, or UsageError. Its linears all Q8_0: int8, one f16
    scale per 32 inputs; all Q4_0 (d * (q - 8)) or Q4_1 (d * q + m), or a mix of the two: uint4 with f16
    scales and offsets (Q4_0 as scale d, offset -8d: its blocks taken as stored, writer.keep_q4_0). The
    token embedding / LM head go to int8 groups of 32 (a Q8_0 embedding, as llama.cpp's Q4 files have,
    exactly). Q8_0 and Q4_1 blocks come back exactly from the quantizers: a block's extreme values sit
    on the grid's ends (tests/test_gguf_loader.py)."""
    from tinyqmoe.compress.writer import CompressOptions

    kinds = set(_quantized_source_types(ckpt, embeddings=False).values())
    if kinds == {"q8_0"} or (kinds and kinds <= {"q4_0", "q4_1"}):
        return CompressOptions(bits=8 if kinds == {"q8_0"} else 4, group=32, embed_bits=8, scale_dtype="f16",
                               codec="raw", stats=False)
    found = ", ".join(sorted(str(k) for k in kinds))
    raise UsageError(f"weights=native runs files whose linear layers are all Q8_0, or Q4_0 / Q4_1; this one "
                     f"has {found} (use weights=int8)", ckpt.path)


def _int8_cache_path(path: Path, group: int | None, native: bool = False) -> Path:
    """Where the int8 cache of a float checkpoint lives: named by its files' paths, sizes and times."""
    import hashlib

    from tinyqmoe.assets import cache_dir

    files = sorted(path.glob("*")) if path.is_dir() else [path]
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())
    tag = "|native" if native else ""
    digest = hashlib.sha256(f"{key}|group={group}|v4{tag}".encode()).hexdigest()[:16]   # v4: Q8_0 blocks kept
    return cache_dir() / "int8" / f"{path.stem}-{digest}.tqm"


def _int8_cache(path: Path, group: int | None, progress: bool, native: bool = False) -> Path:
    """The raw int8 .tqm of a float checkpoint in the cache directory, written once (native: the raw
    container of a GGUF's own blocks, _native_options)."""
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint

    target = _int8_cache_path(path, group, native)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_checkpoint(path) as ckpt:
            if ckpt.tokenizer is None:
                raise UsageError("model has no tokenizer (tokenizer.json)", path)
            c = ckpt.config
            for n_in in {c.dim, c.q_dim, c.ffn_dim}:
                if group and n_in % group:
                    raise UsageError(f"group size {group} does not divide the input dimension {n_in}", path)
            if native:
                opts = _native_options(ckpt)
            elif _keeps_q8_0_blocks(ckpt, group):
                opts = CompressOptions(bits=8, group=32, scale_dtype="f16", codec="raw", stats=False)
            else:
                opts = CompressOptions(bits=8, group=group or 0, codec="raw", stats=False)
            write_container(ckpt, target, opts, progress=progress)
    return target


class Model:
    """A loaded model. One forward pass at a time (its activation buffers are reused)."""

    def __init__(self, name: str, config: LlamaConfig, tokenizer: Tokenizer, weights, runtime: Runtime, *,
                 weights_kind: str, source: str, max_context: int, bits_per_weight: float,
                 cache_types: tuple[str, str] = ("f32", "f32"), max_rows: int | None = None):
        self.name = name
        self.config = config
        self.tokenizer = tokenizer
        self.weights = weights              # a WeightSource (weights/source.py)
        self.runtime = runtime
        self.weights_kind = weights_kind    # "f32" | "int8" | "tqm"
        self.source = source                # "resident" | "fused" | "streamed"
        self.max_context = max_context      # positions a sequence may hold (a budget lowers it)
        self.max_rows = max_rows            # rows (tokens) per forward call, None: any (a budget sets it)
        self.bits_per_weight = bits_per_weight  # linear layers, scales included, before any codec
        self.container_path: Path | None = None   # the .tqm file it was loaded from, if one
        self.cache_types = cache_types      # (keys, values) of every KV cache: "f32" | "f16"
        self.load_seconds = 0.0
        self.last_stats = GenerationStats()
        self._acts = Activations(config)
        self._decode_path = "reference"
        self._fused = None                  # kernels.decode.FusedDecode, made when first asked for
        from tinyqmoe.kernels.decode import supports

        if supports(weights):               # resident int8: one compiled call per token (1.14x, quiet Zen 3)
            self.decode_path = "fused"

    DECODE_PATHS = ("reference", "fused")

    @property
    def decode_path(self) -> str:
        """How single sequences of up to 16 tokens run (decode, short prompts): "reference" is
        model/forward.py; "fused" is one compiled call per token (kernels/layer.py, resident int8
        weights only, the default for them), equal to the reference within float rounding
        (tests/test_kernels_layer.py)."""
        return self._decode_path

    @property
    def fused_prompt_chunks(self) -> bool:
        """Do prompt chunks of up to 32 tokens cost less in the fused call (`forward_batch(...,
        path="stream")`, beside decoding rows) than alone in the prompt path? Yes where every row
        multiplies int16 tokens (kernels/rowdot_a16.py: AVX-512 VNNI, rows with one scale): 1,230-1,370
        against 970-1,080 prompt tokens/s on Zen 5 (docs/serving.md). The server's scheduler asks."""
        return self._decode_path == "fused" and self._fused.int16_tokens

    @property
    def prefill_path(self) -> str:
        """How resident int8 linears multiply more than 16 rows (long prompts): "int8" (the default)
        quantizes the activations per token and block of 32 inputs and runs int8 x int8 products with
        int32 sums (kernels/gemm_i8.py), ~1.5x faster (docs/benchmarks.md) and within the int8 tolerance of
        tests/test_kernels_layer.py; "f32" dequantizes cache-sized row blocks for BLAS sgemm. 4-bit rows
        kept packed take the int8 panel too, their nibbles widened per tile ("f32": uint4 rows then run
        their int8-activation row tiles, int4 ones BLAS); f32 weights take their f32 path whatever is
        set: this reads "f32" for them.
        Every weight source (resident, streamed, fused) computes the same numbers either way."""
        int8 = getattr(self.weights, "takes_int8_prefill", False)
        return "int8" if self.runtime.int8_prefill and int8 else "f32"

    @prefill_path.setter
    def prefill_path(self, path: str) -> None:
        if path not in ("f32", "int8"):
            raise UsageError(f"unknown prefill path {path!r} (choose f32, int8)")
        self.runtime.int8_prefill = path == "int8"

    @decode_path.setter
    def decode_path(self, path: str) -> None:
        if path not in self.DECODE_PATHS:
            raise UsageError(f"unknown decode path {path!r} (choose {', '.join(self.DECODE_PATHS)})")
        if path == "fused" and self._fused is None:
            from tinyqmoe.kernels.decode import FusedDecode

            self._fused = FusedDecode(self.weights, self.config)
        self._decode_path = path

    @functools.cached_property
    def stored_bits_per_weight(self) -> float:
        """Bits per weight as stored: a .tqm file's all in (8 x file bytes / weights, what `tinyqmoe
        inspect` prints: the codec's output, not the quantized values), else bits_per_weight."""
        if self.container_path is None:
            return self.bits_per_weight
        from tinyqmoe.compress.inspect import stored_bits_per_weight

        return stored_bits_per_weight(self.container_path)

    @property
    def threads(self) -> int:
        return self.runtime.threads

    def new_state(self, capacity: int | None = None) -> RunState:
        """A sequence's KV cache for `capacity` positions (default and most: max_context), of the
        model's cache types."""
        return RunState(self.config, min(capacity or self.max_context, self.max_context), *self.cache_types)

    def forward_batch(self, states: list[RunState], token_lists: list, all_logits: bool = False,
                      path: str = "auto") -> list[np.ndarray]:
        """Append token_lists[i] at states[i].pos for every i in one pass over the weights; per sequence
        float32 (T_i, V) logits if all_logits else (1, V). path="stream" keeps per-row kernels, so a
        row's result never depends on the rest of the batch (see model/forward.py). Under a memory
        budget (`max_rows`) more rows than it leaves run in several calls."""
        if len(states) != len(token_lists) or not states:
            raise UsageError("forward_batch needs one token list per state, and at least one")
        for ids in token_lists:
            if len(ids) == 0:
                raise UsageError("forward_batch: every sequence needs at least one token")
            self._check_ids(ids)
        if self.max_rows is not None and sum(len(ids) for ids in token_lists) > self.max_rows:
            return self._in_pieces(states, token_lists, all_logits, path)
        return self._forward_rows(states, token_lists, all_logits, path)

    def _in_pieces(self, states, token_lists, all_logits, path) -> list[np.ndarray]:
        """forward_batch in calls of at most max_rows rows (what a budget leaves for activations and
        logits: weights/budget.rows_within, at least its MIN_ROWS): a sequence longer than what a
        call has left goes on in the next call, the same as a shorter prompt after a longer cache (equal
        within float rounding). A prompt's pieces all stay longer than SMALL_BATCH rows, so none of them
        runs the decode kernels' arithmetic instead of the prompt's."""
        done = [0] * len(states)
        parts: list[list[np.ndarray]] = [[] for _ in states]
        from tinyqmoe.weights.budget import MIN_ROWS

        rows = max(self.max_rows, MIN_ROWS)   # fewer could leave a sequence no valid piece
        while True:
            idx, pieces, room = [], [], rows
            for i, ids in enumerate(token_lists):
                left = len(ids) - done[i]
                n = min(room, left)
                if n < left:      # split: both this piece and the rest longer than SMALL_BATCH, or wait
                    n = min(n, left - SMALL_BATCH - 1)
                    n = n if n > SMALL_BATCH else 0
                if n > 0:
                    idx.append(i)
                    pieces.append(list(ids[done[i]:done[i] + n]))
                    room -= n
            if not idx:
                return [np.concatenate(p) if all_logits else p[-1] for p in parts]
            for i, piece, lg in zip(idx, pieces, self._forward_rows([states[i] for i in idx], pieces, all_logits, path)):
                done[i] += len(piece)
                parts[i].append(np.array(lg))   # a copy: a fused call's logits are views of its scratch

    def _forward_rows(self, states, token_lists, all_logits, path) -> list[np.ndarray]:
        self.runtime.activate()
        if self._decode_path == "fused" and path in ("auto", "stream"):
            return self._forward_fused(states, token_lists, all_logits, path)
        return forward_batch(self.weights, states, token_lists, self.runtime, self._acts, all_logits, path)

    FUSED_ROWS = 64    # rows per fused call (bounds its scratch); splitting never changes a row's result

    def _forward_fused(self, states, token_lists, all_logits, path) -> list[np.ndarray]:
        """Sequences of up to SMALL_BATCH tokens (path "stream": of up to FUSED_ROWS) run in fused calls
        of up to FUSED_ROWS rows, whose rows are independent of each other (kernels/rowdot.py); longer
        ones (prompts) the reference way."""
        results: list = [None] * len(states)
        group: list[int] = []

        def flush():
            logits = self._fused.run([states[i] for i in group], [token_lists[i] for i in group], all_logits)
            for i, lg in zip(group, logits):
                results[i] = lg
            group.clear()

        rows = 0
        longest = self.FUSED_ROWS if path == "stream" else SMALL_BATCH
        for i, ids in enumerate(token_lists):
            if len(ids) > longest:
                results[i] = forward_batch(self.weights, [states[i]], [ids], self.runtime, self._acts,
                                           all_logits, path)[0]
                continue
            if group and rows + len(ids) > self.FUSED_ROWS:
                flush()
                rows = 0
            group.append(i)
            rows += len(ids)
        if group:
            flush()
        return results

    def _forward(self, state: RunState, ids, all_logits: bool = False) -> np.ndarray:
        if self.max_rows is not None and len(ids) > self.max_rows:
            return self._in_pieces([state], [ids], all_logits, "auto")[0]
        self.runtime.activate()
        if self._decode_path == "fused" and len(ids) <= SMALL_BATCH:
            return self._fused.run([state], [ids], all_logits)[0]
        return forward_batch(self.weights, [state], [ids], self.runtime, self._acts, all_logits)[0]

    def close(self) -> None:
        """Release the weight source (files, background threads) and the runtime's pool."""
        self.weights.close()
        self.runtime.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- scoring
    def logits(self, ids: list[int]) -> np.ndarray:
        """float32 [len(ids), V]: the full causal forward pass over `ids` from an empty cache."""
        self._check_ids(ids)
        return self._forward(self.new_state(len(ids)), ids, all_logits=True)

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
        last = self._forward(state, context_ids)[0]
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
                rows.append(self._forward(state, cont[:-1], all_logits=True))
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

    # ---- generation (option meanings: docs/conventions.md)
    def stream_ids(self, ids: list[int], max_new_tokens: int = 128, temperature: float = 0.0, top_k: int = 0,
                   top_p: float = 1.0, seed: int | None = None, state: RunState | None = None, *,
                   min_p: float = 0.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                   ignore_eos: bool = False, history: list[int] | None = None) -> Iterator[int]:
        """Token ids generated after `ids` (checked now; generated as the iterator is consumed).

        With `state`, `ids` continue the sequence already in its KV cache (`history`: the ids it holds,
        for the repeat penalty). max_new_tokens -1 = until end of sequence or a full context.
        Why generation ended is in `self.last_stats.stop_reason` once the iterator is exhausted."""
        self._check_ids(ids)
        if not ids:
            raise UsageError("empty prompt")
        params = SamplingParams(temperature, top_k, top_p, seed, min_p, repeat_penalty, repeat_last_n).resolved()
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < -1:
            raise UsageError(f"max_new_tokens (-n) {max_new_tokens!r}: expected an integer >= 0, or -1 for no limit")
        start, limit = (0, self.max_context) if state is None else (state.pos, state.capacity)
        room = limit - start - len(ids)
        if room < 0:
            raise UsageError(f"prompt of {start + len(ids)} tokens does not fit the context of {limit}")
        if max_new_tokens == -1 or max_new_tokens > room:
            n, limit_reason = room, "context"
        else:
            n, limit_reason = int(max_new_tokens), "length"
        stats = self.last_stats = GenerationStats()
        stats.seed, stats.max_new_tokens = params.seed, max_new_tokens
        if state is None:
            state = self.new_state(len(ids) + n)
        history = list(history or []) + list(ids)
        return self._generate_ids(state, ids, n, params, stats, history, ignore_eos, limit_reason)

    def _generate_ids(self, state, ids, n, params, stats, history, ignore_eos, limit_reason) -> Iterator[int]:
        start = state.pos
        t0 = time.perf_counter()
        logits = prefill(self._forward, state, ids)
        stats.prompt_tokens, stats.prompt_seconds = len(ids), time.perf_counter() - t0
        try:
            yield from decode_n_tokens(self._forward, state, logits, n, params, self.tokenizer.stop_ids, stats,
                                       history, ignore_eos, limit_reason)
        finally:
            stats.context_tokens = start + len(ids) + stats.generated

    def chat_session(self, system: str | None = None) -> "ChatSession":
        return ChatSession(self, system)

    def stream(self, prompt: str, max_new_tokens: int = 128, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, chat: bool = False, *, stop: str | list[str] | None = None,
               min_p: float = 0.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
               ignore_eos: bool = False) -> Iterator[str]:
        """Yield text pieces as tokens are generated. `chat=True` wraps the prompt in the chat template.

        `stop`: strings that end generation; the output ends right before the first one to appear, and
        text that could begin one is held back until decided (a partial match is never yielded)."""
        if not isinstance(prompt, str):
            raise UsageError(f"prompt must be a string, not {type(prompt).__name__} (generate() takes a list)")
        stops = _stop_list(stop)
        if chat:
            ids = self.tokenizer.encode_chat([{"role": "user", "content": prompt}])
        else:
            ids = self.tokenizer.encode(prompt)
        tokens = self.stream_ids(ids, max_new_tokens, temperature, top_k, top_p, seed, min_p=min_p,
                                 repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, ignore_eos=ignore_eos)
        return decode_text(tokens, self.tokenizer.stream_decoder(), stops, self.last_stats)

    def generate(self, prompt: str | list[str], max_new_tokens: int = 128, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None, chat: bool = False, *,
                 stop: str | list[str] | None = None, min_p: float = 0.0, repeat_penalty: float = 1.0,
                 repeat_last_n: int = 64, ignore_eos: bool = False) -> str | list[str]:
        """The completion of `prompt` (a string), or a list of completions for a list of prompts, each
        generated as if alone (the same options and seed for each). Stats: `self.last_stats` (for a
        list, `self.last_stats_list` holds one per prompt)."""
        options = dict(chat=chat, stop=stop, min_p=min_p, repeat_penalty=repeat_penalty,
                       repeat_last_n=repeat_last_n, ignore_eos=ignore_eos)
        if isinstance(prompt, str):
            return "".join(self.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed, **options))
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(p, str) for p in prompt):
            raise UsageError("prompt must be a string or a list of strings")
        texts, stats = [], []
        for p in prompt:
            texts.append("".join(self.stream(p, max_new_tokens, temperature, top_k, top_p, seed, **options)))
            stats.append(self.last_stats)
        self.last_stats_list = stats
        return texts

    def __repr__(self) -> str:
        c = self.config
        return (f"<tinyqmoe.Model {self.name!r}: {c.n_layers} layers, dim {c.dim}, vocab {c.vocab_size}; "
                f"{self.weights_kind} weights, {self.source}, context {self.max_context}, {self.threads} threads>")

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

    def send(self, text: str, stop: str | list[str] | None = None, **sampling) -> Iterator[str]:
        """Add a user turn and stream the assistant's reply (sampling options as in Model.stream).

        The reply kept in `messages` is the text streamed out (cut before a stop string)."""
        if not isinstance(text, str):
            raise UsageError(f"a chat turn must be a string, not {type(text).__name__}")
        stops = _stop_list(stop)
        tok = self.model.tokenizer
        self.messages.append({"role": "user", "content": text})
        ids = tok.encode_chat(self.messages)
        common = 0
        for a, b in zip(self.cached, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # prefill at least one token to get logits
        self.state.truncate(common)
        try:
            tokens = self.model.stream_ids(ids[common:], state=self.state, history=ids[:common], **sampling)
        except BaseException:
            self.messages.pop()
            raise
        return self._reply(ids, tokens, stops)

    def _reply(self, ids, tokens, stops) -> Iterator[str]:
        reply: list[int] = []
        pieces: list[str] = []

        def recorded():
            try:
                for token in tokens:
                    reply.append(token)
                    yield token
            finally:
                tokens.close()

        try:
            for piece in decode_text(recorded(), self.model.tokenizer.stream_decoder(), stops, self.model.last_stats):
                pieces.append(piece)
                yield piece
        finally:
            self.cached = (ids + reply)[: self.state.pos]
            self.messages.append({"role": "assistant", "content": "".join(pieces)})


def _stop_list(stop) -> list[str]:
    """`stop=` as a list of non-empty strings (None, a string, or a list of strings)."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
        raise UsageError("stop must be a string or a list of strings")
    if any(s == "" for s in stops):
        raise UsageError("a stop string must not be empty")
    return list(stops)


def _progress_bar(total: int, desc: str):
    from tinyqmoe.progress import layer_callback

    return layer_callback(total, desc)
