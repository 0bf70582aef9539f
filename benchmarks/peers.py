"""Side-by-side speed of the default model in tinyqmoe and its peers, each in its own process.

    .venv/bin/python benchmarks/peers.py [--peers tinyqmoe-int8,llama.cpp-q8_0,transformers-fp32]
                                         [--threads 2] [--prompt-tokens 128] [--gen-tokens 128] [--repeats 3]
                                         [--peers-python /work/peers-venv/bin/python]

Every peer gets the same prompt token ids (tinyqmoe.bench.prompt_ids on the default model's tokenizer),
decodes greedily for exactly --gen-tokens tokens (no stop on EOS), and reports load seconds, prompt
(prefill) tok/s, generation tok/s (medians over --repeats after one warm-up) and peak RSS of its
process. Results: benchmarks/results/peers-<UTC time>.json and peers-latest.json, with machine info.
llama.cpp runs the Q8_0 requantization of the default GGUF (llama_model_quantize, allow_requantize),
written once into the tinyqmoe cache. Install the peers as benchmarks/README.md says.

This file runs in two interpreters: the parent (the project's venv) and the llama.cpp child (the
peers venv), so its top level imports only the standard library.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = ("tinyqmoe-int8", "llama.cpp-q8_0", "transformers-fp32")
# also: "tinyqmoe-4bit" (a raw 4-bit group-32 container, resident and packed) against "llama.cpp-q4_1"
# (the shipped GGUF, whose layers are Q4_1), and "tinyqmoe-q4_0" (`weights="native"`: the Q4_0 file's
# own blocks) against "llama.cpp-q4_0" (the default GGUF requantized to Q4_0 by llama.cpp, one file)
DEFAULT_PEERS_PYTHON = "/work/peers-venv/bin/python"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed_runs(prefill, decode_one, n_gen: int, repeats: int) -> tuple[float, float]:
    """Median prompt and generation tok/s. prefill() -> first token; decode_one(token) -> next token."""
    p, g = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tok, n_prompt = prefill()
        t1 = time.perf_counter()
        for _ in range(n_gen):
            tok = decode_one(tok)
        t2 = time.perf_counter()
        p.append(n_prompt / (t1 - t0))
        g.append(n_gen / (t2 - t1))
    return statistics.median(p), statistics.median(g)


# ---- children: one process per peer; each prints one JSON line on stdout

def child_llama_cpp(job: dict) -> dict:
    import llama_cpp
    import numpy as np

    t0 = time.perf_counter()
    # llama-cpp-python keeps logits for n_batch positions (without logits_all), indexed by position: a
    # prompt plus generation longer than 512 needs the batch to cover it (its scores array then grows)
    n = len(job["prompt_ids"]) + job["gen_tokens"] + 1
    llm = llama_cpp.Llama(job["model"], n_ctx=max(1024, n), n_batch=max(512, n), n_threads=job["threads"],
                          n_threads_batch=job["threads"], verbose=False)
    load_s = time.perf_counter() - t0
    ids = job["prompt_ids"]

    def prefill():
        llm.reset()
        llm.eval(ids)
        return int(np.argmax(llm.scores[llm.n_tokens - 1])), len(ids)

    def decode_one(tok):
        llm.eval([tok])
        return int(np.argmax(llm.scores[llm.n_tokens - 1]))

    llm.eval(ids[:8])  # warm-up
    prompt_tps, gen_tps = timed_runs(prefill, decode_one, job["gen_tokens"], job["repeats"])
    return {"peer": job["peer"], "version": llama_cpp.__version__, "load_s": load_s,
            "prompt_tps": prompt_tps, "gen_tps": gen_tps, "peak_rss_mb": peak_rss_mb()}


def child_transformers(job: dict) -> dict:
    import torch
    import transformers

    torch.set_num_threads(job["threads"])
    gguf_path = Path(job["model"])
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                              dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    ids = torch.tensor([job["prompt_ids"]])
    state = {}

    @torch.no_grad()
    def prefill():
        out = model(ids, use_cache=True)
        state["past"] = out.past_key_values
        return out.logits[0, -1].argmax(), ids.shape[1]

    @torch.no_grad()
    def decode_one(tok):
        out = model(tok.view(1, 1), past_key_values=state["past"], use_cache=True)
        state["past"] = out.past_key_values
        return out.logits[0, -1].argmax()

    with torch.no_grad():
        model(ids[:, :8])  # warm-up
    prompt_tps, gen_tps = timed_runs(prefill, decode_one, job["gen_tokens"], job["repeats"])
    return {"peer": "transformers-fp32", "version": transformers.__version__, "torch": torch.__version__,
            "load_s": load_s, "prompt_tps": prompt_tps, "gen_tps": gen_tps, "peak_rss_mb": peak_rss_mb()}


def child_tinyqmoe(job: dict) -> dict:
    import tinyqmoe
    from tinyqmoe.bench import run_bench

    weights = None if job["model"].endswith(".tqm") else "native" if job["peer"] == "tinyqmoe-q4_0" else "int8"
    model = tinyqmoe.load(job["model"], weights=weights, threads=job["threads"])
    r = run_bench(model, prompt_tokens=len(job["prompt_ids"]), gen_tokens=job["gen_tokens"], repeats=job["repeats"])
    return {"peer": job["peer"], "version": getattr(tinyqmoe, "__version__", "?"), "load_s": r.load_s,
            "prompt_tps": r.prompt_tps, "gen_tps": r.gen_tps, "peak_rss_mb": peak_rss_mb()}


CHILDREN = {"llama.cpp-q8_0": child_llama_cpp, "llama.cpp-q4_1": child_llama_cpp, "llama.cpp-q4_0": child_llama_cpp,
            "transformers-fp32": child_transformers, "tinyqmoe-int8": child_tinyqmoe, "tinyqmoe-4bit": child_tinyqmoe,
            "tinyqmoe-q4_0": child_tinyqmoe}


def four_bit_container(src: Path, out_dir: Path) -> Path:
    """The default model as a raw 4-bit container (uint4: a scale and an offset per 32 inputs, the
    embedding int8, as `compress --bits 4` writes it), written once."""
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint

    path = out_dir / "default-uint4-g32-raw.tqm"
    if not path.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        with open_checkpoint(src) as ck:
            write_container(ck, path, CompressOptions(bits=4, group=32, codec="raw"), progress=False)
    return path


# ---- parent

def requantized_model(src: Path, kind: str, peers_python: str) -> Path:
    """The default GGUF requantized to `kind` ("Q8_0", "Q4_0") by llama.cpp, made once in the tinyqmoe cache."""
    from tinyqmoe.assets import cache_dir

    dst = cache_dir() / "peers" / (src.name.replace(".Q4_1", "") .removesuffix(".gguf") + f".{kind}.gguf")
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{kind}-", suffix=".gguf", dir=dst.parent)
    os.close(fd)
    code = ("import sys, llama_cpp\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            f"p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_{kind}; p.allow_requantize = True; p.nthread = 2\n"
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))\n")
    try:
        subprocess.run([peers_python, "-c", code, str(src), tmp], check=True, capture_output=True)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "date_utc": datetime.datetime.utcnow().isoformat(timespec="seconds"),
            "loadavg_1min_before": os.getloadavg()[0]}


def run_child(python: str, peer: str, job: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               NUMBA_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--child", peer], input=json.dumps(job),
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return {"peer": peer, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peers-python", default=DEFAULT_PEERS_PYTHON, help="interpreter with llama-cpp-python")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(sys.stdin.read()))))
        return 0

    from tinyqmoe.assets import model_path
    from tinyqmoe.bench import prompt_ids
    from tinyqmoe.formats.load_gguf import open_gguf
    from tinyqmoe.model.tokenizer import Tokenizer

    src = model_path("default")
    ids = prompt_ids(Tokenizer(open_gguf(src).tokenizer), args.prompt_tokens)
    job = {"prompt_ids": ids, "gen_tokens": args.gen_tokens, "repeats": args.repeats, "threads": args.threads}
    machine = machine_info()  # the load average before the runs: other busy processes skew the timings
    rows = []
    for peer in args.peers.split(","):
        if peer == "llama.cpp-q8_0":
            model, python = str(requantized_model(src, "Q8_0", args.peers_python)), args.peers_python
        elif peer in ("llama.cpp-q4_0", "tinyqmoe-q4_0"):
            model = str(requantized_model(src, "Q4_0", args.peers_python))
            python = args.peers_python if peer.startswith("llama.cpp") else sys.executable
        elif peer == "llama.cpp-q4_1":
            model, python = str(src), args.peers_python
        elif peer == "tinyqmoe-4bit":
            model, python = str(four_bit_container(src, args.out)), sys.executable
        else:
            model, python = str(src), sys.executable
        print(f"running {peer} ...", file=sys.stderr)
        row = run_child(python, peer, dict(job, model=model, peer=peer), args.threads)
        print(json.dumps(row), file=sys.stderr)
        rows.append(dict(row, loadavg_1min_after=os.getloadavg()[0]))
    machine["loadavg_1min_after"] = os.getloadavg()[0]
    result = {"machine": machine, "threads": args.threads, "prompt_tokens": len(ids),
              "gen_tokens": args.gen_tokens, "repeats": args.repeats,
              "command": "python benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "results": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    for name in (f"peers-{stamp}.json", "peers-latest.json"):
        write_atomic(args.out / name, json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def table(result: dict) -> str:
    lines = ["| peer | load s | prompt tok/s | gen tok/s | peak RSS MB |", "|---|---:|---:|---:|---:|"]
    for r in result["results"]:
        if "error" in r:
            lines.append(f"| {r['peer']} | error: {r['error'].splitlines()[-1]} | | | |")
        else:
            lines.append(f"| {r['peer']} | {r['load_s']:.2f} | {r['prompt_tps']:.1f} | {r['gen_tps']:.1f} "
                         f"| {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
