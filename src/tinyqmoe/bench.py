"""Speed and memory of one model: load time, prefill and decode tok/s, peak RSS, achieved GB/s."""
from __future__ import annotations

import dataclasses
import statistics
import time

from tinyqmoe.weights.budget import peak_rss_bytes

BENCH_TEXT = (
    "The history of computing is a story of doing more with less. Early machines filled rooms and "
    "consumed kilowatts to perform a few thousand operations per second, while a modern phone performs "
    "billions. Yet memory has not kept pace with arithmetic: moving a byte from main memory costs far more "
    "time and energy than multiplying two numbers. Language models make this imbalance plain, because "
    "every generated token must read every weight of the network once. "
)


@dataclasses.dataclass
class BenchResult:
    model: str
    weights: str
    threads: int
    prompt_tokens: int
    gen_tokens: int
    load_s: float
    prompt_tps: float        # median over repeats
    gen_tps: float           # median over repeats
    weight_bytes: int        # bytes of weights read per decoded token
    gen_gbps: float          # weight_bytes * gen_tps
    peak_rss_mb: float       # decimal MB (10^6 bytes), as budgets are written
    source: str = "resident"
    cold: bool = False
    storage_read_per_token: int = 0  # bytes the kernel read from storage per forward pass (/proc/self/io)
    decode_share: float = 0.0        # decoding time (summed over threads) / wall time, streamed and fused

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def prompt_ids(tokenizer, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(BENCH_TEXT, add_bos=not ids)
    return ids[:n]


def run_bench(model, prompt_tokens: int = 128, gen_tokens: int = 128, repeats: int = 3) -> BenchResult:
    ids = prompt_ids(model.tokenizer, prompt_tokens)
    w = model.weights
    list(model.stream_ids(ids[:8], max_new_tokens=4))  # warm-up: numba cache load / first touch
    p, g = [], []
    io0, dec0, t0 = storage_read_bytes(), getattr(w, "decode_seconds", 0.0), time.perf_counter()
    for _ in range(repeats):
        for _tok in model.stream_ids(ids, max_new_tokens=gen_tokens, ignore_eos=True):  # always gen_tokens
            pass
        p.append(model.last_stats.prompt_tps)
        g.append(model.last_stats.gen_tps)
    wall, passes = time.perf_counter() - t0, repeats * gen_tokens  # a prefill and gen_tokens-1 decodes
    read = (storage_read_bytes() - io0) // passes
    share = (getattr(w, "decode_seconds", 0.0) - dec0) / wall
    gen_tps = statistics.median(g)
    if hasattr(w, "stored_bytes"):      # streamed / fused: what is read from the file per token
        wbytes = w.stored_bytes
    else:                               # resident: every weight but the embedding (one row is looked up)
        wbytes = w.nbytes - w.embed.nbytes + (w.embed.nbytes if w.lm_head is w.embed else 0)
    return BenchResult(model=model.name, weights=model.weights_kind, threads=model.threads,
                       prompt_tokens=len(ids), gen_tokens=gen_tokens, load_s=model.load_seconds,
                       prompt_tps=statistics.median(p), gen_tps=gen_tps, weight_bytes=wbytes,
                       gen_gbps=wbytes * gen_tps / 1e9, peak_rss_mb=peak_rss_mb(),
                       source=getattr(model, "source", "resident"), cold=bool(getattr(w, "reader", None)
                                                                             and w.reader.cold),
                       storage_read_per_token=read, decode_share=share)


def storage_read_bytes() -> int:
    """Bytes this process caused to be read from storage (not the page cache): /proc/self/io."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mb() -> float:
    """Peak RSS in decimal MB (10^6 bytes), the unit --max-memory is written in."""
    return peak_rss_bytes() / 1e6
