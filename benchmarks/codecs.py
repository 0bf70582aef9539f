"""Codec speed and size on the default model's real quantized weight streams.

  .venv/bin/python benchmarks/codecs.py streams [--bits 8] [--sample-mb 16] [--repeat 10]
      every codec on a sample of 256 KiB whole-row chunks of every 2-D weight, one thread, one run:
      bits per byte, vs the per-chunk order-0 entropy, encode MB/s, decode MB/s of output through each
      codec's numba core (what the fused reader calls; LZW's with one reused dictionary buffer), zstd also
      through the `zstandard` library's own API, LZW also through its first and its previous decoder ("old",
      "prev"), tANS also through its previous one ("prev"; benchmarks/previous_decoders.py); then XXH64
      (numba) against zlib.crc32 in GB/s. Prints a markdown table naming the CPU.
      Each chunk's decode time is the least over --repeat rounds, the codecs interleaved round by round,
      so a shared machine's busy moments hit every codec alike.
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
from tinyqmoe.compress.container_format import QTYPES
from tinyqmoe.formats.load import open_checkpoint

STREAM_CODECS = {  # label -> (codec, params); a " lib" suffix: decoded by the zstandard library's API,
    "raw": ("raw", {}), "lzw-12": ("lzw", {"max_bits": 12}), "lzw-16": ("lzw", {"max_bits": 16}),  # " old":
    "lzw-20": ("lzw", {"max_bits": 20}), "rans": ("rans", {}), "tans": ("tans", {}),      # the first LZW decoder,
    "zstd-3": ("zstd", {"level": 3}), "zstd-19": ("zstd", {"level": 19}),     # " prev": the LZW / tANS core
}                                                                       # before this one (previous_decoders.py)


def sample_chunks(model: str, bits: int, group: int | None, chunk_size: int, sample_mb: float) -> list[np.ndarray]:
    """Quantize every 2-D weight like the writer does; keep every k-th whole-row chunk up to sample_mb."""
    opts = CompressOptions(bits=bits, group=group).check()
    chunks = []
    with open_checkpoint(model) as ck:
        for name in ck.names:
            shape = ck.shapes[name]
            if not is_quantized_name(name, shape, opts):
                continue
            qtype = opts.tensor_qtype(name)     # as the writer: uint4 for 4 bits, the embedding at int8
            qt, _ = quantize(ck.get(name), group=tensor_group(shape[1], opts.group_size, QTYPES[qtype]),
                             scale_dtype=opts.scale_dtype, qtype=qtype)
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


def cpu_name() -> str:
    """CPU model, family and model numbers from /proc/cpuinfo (what lscpu prints)."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        return "unknown CPU"
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model {info.get('model', '?')}, "
            f"{os.cpu_count()} cores)")


def stream_decoders(chunks, labels):
    """label -> (decode(out, stream), streams, encode seconds); zstd labels ending in "lib" use the
    zstandard library's Python API, the others the numba cores."""
    import zstandard

    from tinyqmoe.compress.lzw_decode import lzw_decode_into_old

    out = {}
    for label in labels:
        name, params = STREAM_CODECS[label.removesuffix(" lib").removesuffix(" old").removesuffix(" prev")]
        c = codecs.codec_by_name(name)
        c.encode(chunks[0][:4096], **params)                       # compile outside the timing
        t = time.perf_counter()
        streams = [np.frombuffer(c.encode(x, **params), np.uint8) for x in chunks]
        t_enc = time.perf_counter() - t
        if label.endswith(" lib"):
            dctx = zstandard.ZstdDecompressor()
            fn = lambda o, s, d=dctx: d.decompress(s)                # noqa: E731 (the library allocates its output)
        elif label.endswith(" old"):
            fn = lzw_decode_into_old
        elif label.endswith(" prev"):                              # the previous core (LZW: one reused dictionary)
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from previous_decoders import lzw_decode_previous, tans_decode_previous

            if name == "lzw":
                ent = np.empty(1 << params["max_bits"], np.int64)
                fn = lambda o, s, e=ent: lzw_decode_previous(o, s, e)    # noqa: E731
            else:
                fn = tans_decode_previous
        elif name == "raw":
            fn = np.copyto
        elif name == "lzw":                                       # one reused dictionary, as the fused loop
            from tinyqmoe.compress.lzw_decode import lzw_decode_scratch

            ent = np.empty(1 << params["max_bits"], np.int64)
            fn = lambda o, s, e=ent: lzw_decode_scratch(o, s, e)     # noqa: E731
        else:
            fn = codecs.core_of(c.id)
        out[label] = (fn, streams, t_enc)
    return out


def interleaved_best(fns: dict, chunks, repeat: int) -> dict:
    """label -> least seconds per chunk summed over chunks; fns: label -> (fn(out, stream), streams)."""
    outs = [np.empty(x.size, np.uint8) for x in chunks]
    best = {k: np.full(len(chunks), np.inf) for k in fns}
    for k, (fn, streams) in fns.items():                          # warm-up, and a correctness check
        for o, s, x in zip(outs, streams, chunks):
            fn(o, s)
            assert k.endswith(" lib") or np.array_equal(o, x), k
    for _ in range(repeat):
        for k, (fn, streams) in fns.items():
            b = best[k]
            for j, (o, s) in enumerate(zip(outs, streams)):
                t = time.perf_counter()
                fn(o, s)
                b[j] = min(b[j], time.perf_counter() - t)
    return {k: float(v.sum()) for k, v in best.items()}


def run_streams(args) -> None:
    import zlib

    from tinyqmoe.compress.xxh64 import xxh64_core

    chunks = sample_chunks(args.model, args.bits, args.group, args.chunk_size, args.sample_mb)
    raw = sum(c.size for c in chunks)
    h0_chunks = sum(order0_entropy_bits(c) for c in chunks) / 8
    labels = args.codecs.split(",")
    dec = stream_decoders(chunks, labels)
    fns = {k: (fn, streams) for k, (fn, streams, _) in dec.items()}
    fns["xxh64"] = (lambda o, s: xxh64_core(s, np.uint64(0)), chunks)
    fns["crc32"] = (lambda o, s: zlib.crc32(s), chunks)
    secs = interleaved_best(fns, chunks, args.repeat)
    # the reference: the faster of zstd-3's two paths in this run (the library's API allocates its output, and
    # in one run on the shared machine that allocation alone halved it)
    ref = min((secs[k] for k in ("zstd-3 lib", "zstd-3") if k in secs), default=None)
    print(f"CPU: {cpu_name()}; machine shared with other agents (load average "
          f"{os.getloadavg()[0]:.1f} at the end of the run)")
    print(f"{len(chunks)} chunks, {raw / 2**20:.1f} MiB of {args.bits}-bit weights; order-0 entropy "
          f"{8 * h0_chunks / raw:.3f} bits/byte per chunk; least of {args.repeat} interleaved rounds per chunk\n")
    print("| codec | bits/byte | vs order-0 (per chunk) | encode MB/s | decode MB/s (1 thread) "
          "| decode vs zstd-3 (its faster path) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for label in labels:
        _, streams, t_enc = dec[label]
        size = sum(s.size for s in streams)
        row = dict(codec=label, bits_per_byte=8 * size / raw, vs_h0=size / h0_chunks, enc_mbs=raw / t_enc / 1e6,
                   dec_mbs=raw / secs[label] / 1e6, vs_zstd3=ref / secs[label] if ref else None)
        rows.append(row)
        vs = f"{row['vs_zstd3']:.2f}" if ref else "-"
        print(f"| {label} | {row['bits_per_byte']:.3f} | {row['vs_h0']:.4f} | {row['enc_mbs']:.0f} | "
              f"{row['dec_mbs']:.0f} | {vs} |")
    print(f"\nchecksums on the same chunks: XXH64 (numba) {raw / secs['xxh64'] / 1e9:.2f} GB/s, "
          f"zlib.crc32 {raw / secs['crc32'] / 1e9:.2f} GB/s ({secs['crc32'] / secs['xxh64']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": "streams", "args": vars(args), "cpu": cpu_name(), "raw_bytes": raw, "rows": rows,
                       "xxh64_gbs": raw / secs["xxh64"] / 1e9, "crc32_gbs": raw / secs["crc32"] / 1e9}, f, indent=1)


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
            with open_container(path) as c, ThreadPoolExecutor(threads) as pool:
                parts, trs = account(c), tensor_rows(c)
                quant = sum(r.quant_bytes for r in trs)
                t_dec = best_time(lambda: [c.read_payload(n, pool) for n in c.names], args.repeat)
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
    p.add_argument("--sample-mb", type=float, default=16)
    p.add_argument("--codecs", default="raw,tans prev,tans,rans,lzw-16 old,lzw-16 prev,lzw-16,lzw-12,lzw-20,zstd-3 lib,"
                                       "zstd-3,zstd-19 lib,zstd-19")
    p.add_argument("--configs", default="8:raw,8:lzw-12,8:lzw-16,8:rans,8:tans,8:zstd,8:auto,"
                                        "4:raw,4:lzw-16,4:rans,4:tans,4:zstd,4:auto,ternary:raw,ternary:lzw-16,"
                                        "ternary:rans,ternary:tans,ternary:zstd,ternary:auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeat", type=int, default=None, help="timing rounds (streams: 10, table: 2)")
    p.add_argument("--tmp", default=None, help="directory for the temporary containers")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 10 if args.mode == "streams" else 2
    {"streams": run_streams, "table": run_table, "shared-dict": run_shared_dict}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
