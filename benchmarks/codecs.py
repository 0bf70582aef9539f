"""Codec speed and size on the default model's real quantized weight streams.

  .venv/bin/python benchmarks/codecs.py streams [--bits 8] [--sample-mb 24]
      every codec on a sample of 256 KiB whole-row chunks of every 2-D weight: bits per byte, encode MB/s
      (1 thread), decode MB/s of output (1 thread, and all threads over chunks). Side by side, one run.
  .venv/bin/python benchmarks/codecs.py table [--configs 8:auto,8:lzw,...]
      compress the whole model per (bits, codec) with the real writer; file size, ratio vs bf16 and vs the
      uncompressed quantized model, bits/weight, compress wall time, decode-all MB/s. Markdown to stdout.

  .venv/bin/python benchmarks/codecs.py shared-dict [--sample-mb 24]
      what a shared (pre-trained) LZW dictionary would buy: the cost of a chunk B when the dictionary is
      primed with 1 MiB of other weight chunks A (len(lzw(A+B)) - len(lzw(A)), 20-bit codes, no reset),
      against B coded alone.

Warm-up is excluded (each kernel runs once before timing); timings are the best of `--repeat` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinyqmoe.compress import codecs
from tinyqmoe.compress.writer import (CompressOptions, chunk_rows, is_quantized_name, tensor_group,
                                               write_container)
from tinyqmoe.compress.entropy import order0_entropy_bits
from tinyqmoe.compress.quant import quantize
from tinyqmoe.formats.load import open_checkpoint

STREAM_CODECS = {  # label -> (codec, params)
    "raw": ("raw", {}), "lzw-12": ("lzw", {"max_bits": 12}), "lzw-16": ("lzw", {"max_bits": 16}),
    "lzw-20": ("lzw", {"max_bits": 20}), "rans": ("rans", {}), "zstd-3": ("zstd", {"level": 3}),
    "zstd-19": ("zstd", {"level": 19}),
}


def sample_chunks(model: str, bits: int, group: int | None, chunk_size: int, sample_mb: float) -> list[np.ndarray]:
    """Quantize every 2-D weight like the writer does; keep every k-th whole-row chunk up to sample_mb."""
    opts = CompressOptions(bits=bits, group=group).check()
    chunks = []
    with open_checkpoint(model) as ck:
        for name in ck.names:
            shape = ck.shapes[name]
            if not is_quantized_name(name, shape, opts):
                continue
            qt, _ = quantize(ck.get(name), bits, tensor_group(shape[1], opts.group_size, bits))
            p = np.ascontiguousarray(qt.q).view(np.uint8)
            chunks += [p[r:r + n].reshape(-1).copy() for r, n in chunk_rows(p.shape[0], p.shape[1], chunk_size)]
    total = sum(c.size for c in chunks)
    k = max(1, int(total / (sample_mb * 2**20)))
    return chunks[::k]


def best_time(fn, repeat: int) -> float:
    fn()                                   # warm-up (and numba compilation) excluded
    return min(_timed(fn) for _ in range(repeat))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_streams(args) -> None:
    chunks = sample_chunks(args.model, args.bits, args.group, args.chunk_size, args.sample_mb)
    raw = sum(c.size for c in chunks)
    h0_chunks = sum(order0_entropy_bits(c) for c in chunks) / 8
    h0_all = order0_entropy_bits(np.concatenate(chunks)) / 8
    threads = args.threads or os.cpu_count() or 1
    print(f"# {len(chunks)} chunks, {raw / 2**20:.1f} MiB of {args.bits}-bit weights; order-0 entropy "
          f"{8 * h0_all / raw:.3f} bits/byte over the sample, {8 * h0_chunks / raw:.3f} per chunk; "
          f"{threads} threads for the parallel decode")
    print(f"| codec | bits/byte | vs order-0 (per chunk) | encode MB/s (1 thread) | decode MB/s (1 thread) "
          f"| decode MB/s ({threads} threads) |")
    print("|---|---|---|---|---|---|")
    rows = []
    with ThreadPoolExecutor(threads) as pool:
        for label in args.codecs.split(","):
            name, params = STREAM_CODECS[label]
            c = codecs.codec_by_name(name)
            streams = [c.encode(x, **params) for x in chunks]
            outs = [np.empty(x.size, np.uint8) for x in chunks]
            t_enc = best_time(lambda: [c.encode(x, **params) for x in chunks], args.repeat)
            t_dec = best_time(lambda: [c.decode_into(o, s) for o, s in zip(outs, streams)], args.repeat)
            t_par = best_time(lambda: list(pool.map(c.decode_into, outs, streams)), args.repeat)
            assert all(np.array_equal(o, x) for o, x in zip(outs, chunks))
            size = sum(map(len, streams))
            row = dict(codec=label, bits_per_byte=8 * size / raw, vs_h0=size / h0_chunks,
                       enc_mbs=raw / t_enc / 1e6, dec_mbs=raw / t_dec / 1e6, dec_par_mbs=raw / t_par / 1e6)
            rows.append(row)
            print(f"| {label} | {row['bits_per_byte']:.3f} | {row['vs_h0']:.4f} | {row['enc_mbs']:.0f} | "
                  f"{row['dec_mbs']:.0f} | {row['dec_par_mbs']:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": "streams", "args": vars(args), "raw_bytes": raw, "rows": rows}, f, indent=1)


def run_table(args) -> None:
    from tinyqmoe.compress.reader import open_container
    from tinyqmoe.compress.inspect import account, tensor_rows

    threads = args.threads or os.cpu_count() or 1
    print("| bits | codec | file MB | x vs bf16 | x vs uncompressed quantized | bits/weight (all in) "
          f"| compress s | decode-all MB/s ({threads} threads) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    with open_checkpoint(args.model) as ck, tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for cfg in args.configs.split(","):
            bits_s, codec = cfg.split(":")
            bits = {"8": 8, "4": 4, "ternary": 2}[bits_s]
            lzw_bits = 16
            if codec.startswith("lzw-"):
                codec, lzw_bits = "lzw", int(codec[4:])
            path = os.path.join(tmp, "m.tqm")
            opts = CompressOptions(bits=bits, codec=codec, lzw_max_bits=lzw_bits, threads=threads, stats=False)
            t = time.perf_counter()
            write_container(ck, path, opts, progress=False)
            t_write = time.perf_counter() - t
            with open_container(path) as c:
                parts, trs = account(c), tensor_rows(c)
                quant = sum(r.quant_bytes for r in trs)
                t_dec = best_time(lambda: [c.read_payload(n, threads) for n in c.names], args.repeat)
            bf16 = sum(r.bf16_bytes for r in trs)
            qsize = quant + parts["scales"]
            n = sum(r.n_values for r in trs)
            label = f"{codec}" + (f"-{lzw_bits}" if codec == "lzw" else "")
            row = dict(bits=bits_s, codec=label, file=parts["file"], vs_bf16=bf16 / parts["file"],
                       vs_quant=qsize / parts["file"], bits_per_weight=8 * parts["file"] / n,
                       compress_s=t_write, dec_mbs=quant / t_dec / 1e6)
            rows.append(row)
            print(f"| {bits_s} | {label} | {row['file'] / 1e6:.2f} | {row['vs_bf16']:.2f} | {row['vs_quant']:.3f} | "
                  f"{row['bits_per_weight']:.3f} | {t_write:.0f} | {row['dec_mbs']:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": "table", "args": vars(args), "rows": rows}, f, indent=1)


def run_shared_dict(args) -> None:
    from tinyqmoe.compress.lzw_encode import lzw_encode

    chunks = sample_chunks(args.model, args.bits, args.group, args.chunk_size, args.sample_mb)
    rng = np.random.default_rng(0)
    alone = primed = raw = 0
    for j in rng.choice(len(chunks), size=min(8, len(chunks)), replace=False):
        others = [c for k, c in enumerate(chunks) if k != j]
        a = np.concatenate([others[k] for k in rng.choice(len(others), 4, replace=False)])[: 1 << 20]
        b = chunks[j]
        cost_a = len(lzw_encode(a, 20))
        primed += len(lzw_encode(np.concatenate([a, b]), 20)) - cost_a
        alone += len(lzw_encode(b, 20))
        raw += b.size
    print(f"LZW-20 on {raw / 2**20:.1f} MiB of {args.bits}-bit chunks: alone {8 * alone / raw:.3f} bits/byte, "
          f"with a dictionary primed on 1 MiB of other chunks {8 * primed / raw:.3f} bits/byte")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("streams", "table", "shared-dict"))
    p.add_argument("--model", default="default")
    p.add_argument("--bits", type=int, default=8, help="streams: 8, 4 or 2 (ternary)")
    p.add_argument("--group", type=int, default=None)
    p.add_argument("--chunk-size", type=int, default=256 * 1024)
    p.add_argument("--sample-mb", type=float, default=24)
    p.add_argument("--codecs", default="raw,lzw-12,lzw-16,lzw-20,rans,zstd-3,zstd-19")
    p.add_argument("--configs", default="8:raw,8:lzw-12,8:lzw-16,8:rans,8:zstd,8:auto,"
                                        "4:raw,4:lzw-16,4:rans,4:zstd,4:auto,ternary:raw,ternary:lzw-16,"
                                        "ternary:rans,ternary:zstd,ternary:auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--tmp", default=None, help="directory for the temporary containers")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    {"streams": run_streams, "table": run_table, "shared-dict": run_shared_dict}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
