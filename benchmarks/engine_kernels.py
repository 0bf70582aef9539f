"""The engine kernels of issue 15 side by side, in one process, rounds interleaved.

    .venv/bin/python benchmarks/engine_kernels.py [--rounds 5] [--threads 2] [--gen-tokens 32]
        [--prompt-tokens 128] [--batch-position 16] [--only decode,prefill,q4,batch]

decode   the default model (int8 per channel), one token at a time after a 16-token prompt: today's
         forward() (~12 Python-level calls per layer) against kernels.decode.FusedDecode (one compiled
         call per token: kernels.layer.model_q8). tok/s = single-token passes per second.
prefill  a 128-token prompt through forward(): model.prefill_path "f32" (T > 16: dequantized f32
         row blocks + single-threaded BLAS sgemm on the shared pool) against "int8", the default
         (activations quantized per 32 inputs x int8 weights, kernels.gemm_i8's panel, int32 sums);
         plus each linear shape of the model alone.
batch    a decode step of N sequences (one token each, N = 1, 2, 4, 8; prompts of --batch-position
         tokens before it), what the server runs each step: Model.forward_batch with the reference
         layer by layer (per-row kernels) against the fused call over all N (kernels/rowdot.py tiles);
         tok/s = N / step time, and each fused N against fused N=1 (decoding is memory-bound at 1 row:
         the gain of batching); for N = 4, 8 also the layer-by-layer pass with its products in the int8
         GEMM (path="blocked": int8 activations, kernels/gemm_i8.py), which the server does not decode
         with (its numbers depend on the activations' rounding), as a bound on what that kernel gives.
q4       matvec (T=1) over packed 4-bit weights, group 32 (kernels.matvec_q4) against the same
         weights widened to int8 (kernels.matvec.matmul_q8), on 30 layers' worth of the model's
         shapes (more than the L3, so memory is read as in decode). GB/s = bytes held / time.

Medians over rounds; the CPU is named. Times on a machine shared with other jobs are noisy: compare
the ratios, which come from the same rounds.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import numpy as np


def cpu_line() -> str:
    from tinyqmoe.hw.sysinfo import cpu_model

    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    return f"{cpu_model()}, {os.cpu_count()} CPUs, load average {load}"


def timed(fn, reps: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def bench_decode(model, rounds: int, n: int) -> list[tuple]:
    prompt = list(range(100, 116))

    def run(path):
        model.decode_path = path
        s = model.new_state(256)
        model._forward(s, prompt)
        return timed(lambda: model._forward(s, [7]), n)

    def per_call():
        return run("reference")

    def one_call():
        return run("fused")

    per_call(), one_call()  # compile, warm
    a, b = [], []
    for _ in range(rounds):
        a.append(1 / per_call())
        b.append(1 / one_call())
    return [("decode tok/s", "forward(), per-call kernels", statistics.median(a),
             "FusedDecode, one call per token", statistics.median(b))]


def bench_prefill(model, rounds: int, n_prompt: int) -> list[tuple]:
    """model.prefill_path "f32" against "int8", whole prompts and each linear shape alone."""
    from tinyqmoe.model.forward import forward

    rt = model.runtime
    rt.activate()
    ids = [(37 * i + 11) % model.config.vocab_size for i in range(n_prompt)]
    paths = {"f32": dataclasses.replace(rt, int8_prefill=False), "int8": dataclasses.replace(rt, int8_prefill=True)}
    rows = []

    def run(path):
        return timed(lambda: forward(model.weights, model.new_state(n_prompt), ids, paths[path]))

    run("f32"), run("int8")
    a, b = [], []
    for _ in range(rounds):
        a.append(n_prompt / run("f32"))
        b.append(n_prompt / run("int8"))
    rows.append((f"prefill tok/s ({n_prompt} tokens)", "f32 blocks + BLAS sgemm", statistics.median(a),
                 "int8 x int8 panel GEMM", statistics.median(b)))
    rng = np.random.default_rng(0)
    layer = model.weights.layers[0]
    for name in ("wqkv", "wo", "w_gate_up", "w_down"):
        lin = getattr(layer, name)
        O, I = lin.shape
        x = rng.standard_normal((n_prompt, I)).astype(np.float32)
        lin(x, paths["f32"], None, False), lin(x, paths["int8"], None, False)
        a, b = [], []
        for _ in range(rounds):
            a.append(2 * O * I * n_prompt / timed(lambda: lin(x, paths["f32"], None, False), 3) / 1e9)
            b.append(2 * O * I * n_prompt / timed(lambda: lin(x, paths["int8"], None, False), 3) / 1e9)
        rows.append((f"  {name} {O}x{I}, T={n_prompt}: GOP/s", "f32 sgemm", statistics.median(a),
                     "int8 GEMM", statistics.median(b)))
    return rows


def bench_q4(config, rounds: int, group: int = 32) -> list[tuple]:
    from tinyqmoe.kernels import reference as ref
    from tinyqmoe.kernels.matvec import matmul_q8
    from tinyqmoe.kernels.matvec_q4 import matmul_q4, prepare_q4_input

    c = config
    shapes = [(c.q_dim + 2 * c.kv_dim, c.dim), (c.dim, c.q_dim), (2 * c.ffn_dim, c.dim), (c.dim, c.ffn_dim)]
    rng = np.random.default_rng(0)
    mats = []
    for _ in range(c.n_layers):
        for O, I in shapes:
            p = rng.integers(0, 256, (O, I // 2), dtype=np.uint8)
            scale = rng.random((O, I // group)).astype(np.float32)
            mats.append((p, ref.unpack_q4(p), scale))
    xs = {I: rng.standard_normal((1, I)).astype(np.float32) for _, I in shapes}
    bufs = {I: (np.empty((1, I // 2), np.float32), np.empty((1, I // 2), np.float32),
                np.empty((1, I // group), np.float32)) for _, I in shapes}
    ys = {O: np.empty((1, O), np.float32) for O, _ in shapes}

    def q4():
        for p, _, s in mats:
            xa, xb, xsum = bufs[2 * p.shape[1]]
            prepare_q4_input(xa, xb, xsum, xs[2 * p.shape[1]])
            matmul_q4(ys[p.shape[0]], p, s, xa, xb, xsum)

    def q8():
        for _, q, s in mats:
            matmul_q8(ys[q.shape[0]], q, s, xs[q.shape[1]])

    q4(), q8()
    n4 = sum(p.nbytes + s.nbytes for p, _, s in mats)
    n8 = sum(q.nbytes + s.nbytes for _, q, s in mats)
    a, b = [], []
    for _ in range(rounds):
        a.append(timed(q8, 3))
        b.append(timed(q4, 3))
    ta, tb = statistics.median(a), statistics.median(b)
    return [(f"layer matvecs, group {group}: GB/s", f"int8 widened ({n8 / 1e6:.0f} MB)", n8 / ta / 1e9,
             f"4-bit packed ({n4 / 1e6:.0f} MB)", n4 / tb / 1e9),
            ("  the same: layers' matvecs per second", "int8 widened", 1 / ta, "4-bit packed", 1 / tb)]


def bench_batch(model, rounds: int, position: int = 16, steps: int = 10) -> list[tuple]:
    prompt = [100 + i % 1000 for i in range(position)]
    times: dict = {}
    for _ in range(rounds):
        for n in (1, 2, 4, 8):
            for path in ("reference", "fused", "gemm") if n >= 4 else ("reference", "fused"):
                model.decode_path = "fused" if path == "fused" else "reference"
                arith = "blocked" if path == "gemm" else "stream"
                states = [model.new_state(position + 64) for _ in range(n)]
                model.forward_batch(states, [prompt] * n)
                model.forward_batch(states, [[5]] * n, path=arith)    # warm
                t = timed(lambda: model.forward_batch(states, [[7]] * n, path=arith), steps)
                times.setdefault((path, n), []).append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    at = f"at position {position}"
    rows = [(f"decode step, {n} sequences {at} (tok/s)", "reference, per-row kernels", n / med["reference", n],
             "fused, one call", n / med["fused", n]) for n in (1, 2, 4, 8)]
    rows += [(f"fused: {n} sequences vs 1 {at} (tok/s)", "1 sequence", 1 / med["fused", 1],
              f"{n} sequences", n / med["fused", n]) for n in (2, 4, 8)]
    rows += [(f"decode step, {n} sequences {at} (tok/s)", "fused, one call", n / med["fused", n],
              "layer by layer, int8 GEMM", n / med["gemm", n]) for n in (4, 8)]
    model.decode_path = "fused"
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--batch-position", type=int, default=16, help="prompt tokens before the batch's decode step")
    ap.add_argument("--only", default="decode,prefill,q4,batch")
    a = ap.parse_args()
    import tinyqmoe

    print(f"CPU: {cpu_line()}; threads {a.threads}; machine shared with other jobs")
    model = tinyqmoe.load("default", threads=a.threads)
    parts = a.only.split(",")
    rows = []
    if "decode" in parts:
        rows += bench_decode(model, a.rounds, a.gen_tokens)
    if "prefill" in parts:
        rows += bench_prefill(model, a.rounds, a.prompt_tokens)
    if "batch" in parts:
        rows += bench_batch(model, a.rounds, a.batch_position)
    if "q4" in parts:
        for group in (32, 64):
            rows += bench_q4(model.config, a.rounds, group)
    print("\n| measure | A | A | B | B | B / A |\n|---|---|---:|---|---:|---:|")
    for what, na, va, nb, vb in rows:
        print(f"| {what} | {na} | {va:.1f} | {nb} | {vb:.1f} | {vb / va:.2f}x |")
    print(f"\nafter: {cpu_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
