"""`tinyqmoe serve` under load, measured from the client side with the official openai client.

    .venv/bin/python benchmarks/serve_load.py [MODEL] [--threads 2] [--parallel 8] [--rounds 2] [--quick]

The server runs in its own process (`tinyqmoe serve MODEL --parallel P --threads T` on 127.0.0.1),
the clients in this one. Requests use `ignore_eos` where a fixed length is wanted.

(a) Batching: 8 concurrent greedy requests (64-token prompts, 128 generated tokens each) against one
    request alone: completion tokens / client wall time (first request sent to last completion).
    Alternated solo, batch, solo, batch...; the median of the rounds. Target >= 3.5x.
(b) One stream: the decode rate a streaming client sees ((tokens - 1) / first-to-last token time)
    against `tinyqmoe generate`'s decode rate (its stats line), alternated. Target within 15%.
(c) Load: N requests from C concurrent clients (default 64 from 16), random prompt (8-160 words) and
    output (8-96 tokens) lengths, a third streaming, some sampled with a seed, one in eight cancelled
    (a stream closed after a few events, or a request abandoned by a short client timeout). Every
    request not cancelled must complete, and each must give the text it gets alone afterwards.
Prints a markdown table naming the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
WORDS = re.findall(r"[A-Za-z]+[,.]?", (ROOT / "README.md").read_text())   # prompt material


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    f = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    get = lambda k: f.get(k, "?").strip()  # noqa: E731
    return f"{get('Model name')} (family {get('CPU family')}, {get('CPU(s)')} CPUs, L2 {get('L2 cache')})"


class Server:
    """`tinyqmoe serve` in a child process on a free loopback port."""

    def __init__(self, model: str, threads: int, parallel: int, queue: int = 64):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, "-m", "tinyqmoe", "serve", model, "--port", str(self.port), "--threads", str(threads),
               "--parallel", str(parallel), "--queue", str(queue)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while self.health() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise SystemExit(f"server did not start:\n{self.log.read()}")
            time.sleep(0.3)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=1800)
        self.model_id = self.client.models.list().data[0].id

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def timed_completion(srv: Server, prompt, n: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = srv.client.completions.create(model=srv.model_id, prompt=prompt, max_tokens=n, temperature=0,
                                      extra_body={"ignore_eos": True})
    return r.usage.completion_tokens, time.perf_counter() - t0


def bench_batching(srv: Server, prompts: list, n: int, rounds: int) -> tuple[float, float]:
    """(tok/s alone, tok/s of len(prompts) concurrent requests): medians over the rounds."""
    timed_completion(srv, prompts[0], 4)  # warm-up
    solo, batch = [], []
    for _ in range(rounds):
        tokens, secs = timed_completion(srv, prompts[0], n)
        solo.append(tokens / secs)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(prompts)) as pool:
            results = list(pool.map(lambda p: timed_completion(srv, p, n), prompts))
        batch.append(sum(t for t, _ in results) / (time.perf_counter() - t0))
    return statistics.median(solo), statistics.median(batch)


def stream_rate(srv: Server, prompt: str, n: int) -> float:
    stamps, tokens = [], 0
    stream = srv.client.completions.create(model=srv.model_id, prompt=prompt, max_tokens=n, temperature=0,
                                           stream=True, stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True})
    for c in stream:
        if c.choices and c.choices[0].text:
            stamps.append(time.perf_counter())
        if c.usage:
            tokens = c.usage.completion_tokens
    return (tokens - 1) / (stamps[-1] - stamps[0])


def generate_rate(model: str, prompt: str, n: int, threads: int) -> float:
    r = subprocess.run([sys.executable, "-m", "tinyqmoe", "generate", model, "-p", prompt, "-n", str(n),
                        "--threads", str(threads)], capture_output=True, text=True, timeout=900)
    m = re.search(r"generated (\d+) tok, ([\d.]+) tok/s", r.stderr)
    if not m:
        raise SystemExit(f"generate failed: {r.stderr[-500:]}")
    return float(m.group(2))


def bench_stream(srv: Server, model: str, threads: int, n: int, rounds: int) -> tuple[float, float]:
    prompt = "Once upon a time, in a small village by the sea, there lived"
    server, gen = [], []
    for _ in range(rounds):
        server.append(stream_rate(srv, prompt, n))
        gen.append(generate_rate(model, prompt, n, threads))
    return statistics.median(server), statistics.median(gen)


# ---------------------------------------------------------------- (c) the load test
def make_requests(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    reqs = []
    for i in range(count):
        start = rng.randrange(len(WORDS) - 200)
        sampled = rng.random() < 0.25
        reqs.append({
            "prompt": " ".join(WORDS[start: start + rng.randint(8, 160)]),
            "max_tokens": rng.randint(8, 96),
            "temperature": 0.8 if sampled else 0.0,
            "seed": rng.randrange(1000) if sampled else None,
            "stream": rng.random() < 1 / 3,
            "cancel": i % 8 == 3,
        })
    return reqs


def run_request(srv: Server, req: dict) -> dict:
    kw = dict(model=srv.model_id, prompt=req["prompt"], max_tokens=req["max_tokens"],
              temperature=req["temperature"], seed=req["seed"])
    if req["cancel"] and not req["stream"]:
        quick = srv.client.with_options(timeout=0.3)
        try:
            quick.completions.create(**kw)
            return {"outcome": "finished before the timeout"}
        except openai.APITimeoutError:
            return {"outcome": "cancelled"}
    if req["stream"]:
        stream = srv.client.completions.create(stream=True, **kw)
        text, finish = [], None
        for i, c in enumerate(stream):
            if req["cancel"] and i == 2:
                stream.close()
                return {"outcome": "cancelled"}
            text.append(c.choices[0].text)
            finish = c.choices[0].finish_reason or finish
        return {"outcome": "completed" if finish in ("stop", "length") else f"finish {finish}", "text": "".join(text)}
    r = srv.client.completions.create(**kw)
    finish = r.choices[0].finish_reason
    return {"outcome": "completed" if finish in ("stop", "length") else f"finish {finish}", "text": r.choices[0].text}


def bench_load(srv: Server, count: int, clients: int) -> dict:
    reqs = make_requests(count)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda r: run_request(srv, r), reqs))
    load_secs = time.perf_counter() - t0
    idle = srv.health()
    kept = [(q, r) for q, r in zip(reqs, results) if not q["cancel"]]
    completed = sum(r["outcome"] == "completed" for _, r in kept)
    same = 0
    for q, r in kept:
        alone = run_request(srv, {**q, "stream": False})
        same += alone.get("text") == r.get("text")
    return {"requests": count, "clients": clients, "cancelled": count - len(kept), "kept": len(kept),
            "completed": completed, "equal_solo": same, "seconds": load_secs,
            "slots_free_after": idle["active"] == 0 and idle["waiting"] == 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="short runs: 32 tokens, 16 requests from 4 clients")
    ap.add_argument("--only", default="abc", help="which parts to run (a, b, c)")
    a = ap.parse_args()
    n = 32 if a.quick else 128
    if a.quick:
        a.requests, a.clients = 16, 4

    import tinyqmoe

    tok = tinyqmoe.load(a.model, threads=1).tokenizer   # 64-token prompts, different for each request
    words = " ".join(WORDS)
    ids = tok.encode(words, add_bos=False)
    prompts = [ids[i * 97: i * 97 + 64] for i in range(8)]
    srv = Server(a.model, a.threads, a.parallel)
    rows = []
    try:
        if "a" in a.only:
            solo, batch = bench_batching(srv, prompts, n, a.rounds)
            rows.append((f"(a) 8 concurrent greedy requests vs 1 alone (64-token prompts, {n} tokens; tok/s)",
                         f"{batch:.1f} vs {solo:.1f} = **{batch / solo:.2f}x**", ">= 3.5x"))
        if "b" in a.only:
            server, gen = bench_stream(srv, a.model, a.threads, n, a.rounds)
            rows.append((f"(b) one stream through the server vs `tinyqmoe generate` (decode tok/s, {n} tokens)",
                         f"{server:.1f} vs {gen:.1f} = **{server / gen:.2f}x**", ">= 0.85x"))
        if "c" in a.only:
            r = bench_load(srv, a.requests, a.clients)
            rows.append((f"(c) load: {r['requests']} requests from {r['clients']} clients, {r['cancelled']} cancelled "
                         f"({r['seconds']:.0f} s)",
                         f"{r['completed']}/{r['kept']} completed, {r['equal_solo']}/{r['kept']} equal to solo, "
                         f"slots free after: {'yes' if r['slots_free_after'] else 'NO'}", "all"))
    finally:
        srv.close()
    print(f"\nCPU: {cpu_name()}; {a.threads} threads; server --parallel {a.parallel}; model {a.model}; "
          f"machine shared with other jobs (load average "
          f"{os.getloadavg()[0]:.1f})\n")
    print("| measure | result | target |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
