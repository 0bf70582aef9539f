"""`tinyqmoe compress | inspect | verify`: build, account for and check a .tqm container."""
from __future__ import annotations

import argparse


def _size(text: str) -> int:
    """'256K', '1M', '4096' -> bytes."""
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if t[-1:] in "KMG" else t) * mult)
    except (ValueError, OverflowError):   # OverflowError: 1e400 is infinite
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256K, 1M)") from None


def _chunk_size(text: str):
    return "auto" if text == "auto" else _size(text)


def register(sub) -> None:
    p = sub.add_parser("compress", help="quantize and compress a model into one .tqm file",
                       description="Quantize a model (8-bit, 4-bit or ternary) and compress the weights "
                                   "into a self-describing .tqm container (docs/FORMAT.md).")
    p.add_argument("model", help="HF directory, .gguf file, or a model name such as `default`")
    p.add_argument("-o", "--output", required=True,
                   help="output .tqm path; replaced atomically if it exists (keeping its permissions); a symlink "
                        "is followed and the file it points to replaced; only regular files are written "
                        "(a directory, /dev/null or another device is refused before any work)")
    p.add_argument("--bits", default="8", help="8, 4 or ternary (default 8)")
    p.add_argument("--group", type=int, default=None,
                   help="inputs per scale; 0 = one per output channel (default: 0 for 8 bits, 32 for 4, 64 for ternary)")
    p.add_argument("--codec", default="auto", help="lzw | ans | tans | zstd | raw | auto (per tensor, the "
                   "fastest-decoding codec within 0.5%% of the smallest; default)")
    p.add_argument("--lzw-max-bits", type=int, default=16, help="LZW maximum code width, 9..24 (default 16)")
    p.add_argument("--chunk-size", type=_chunk_size, default=256 * 1024,
                   help="raw bytes per chunk, whole rows (default 256K); 'auto' = half the measured L2, "
                        "from `tinyqmoe probe` (a quick probe runs if none is stored)")
    p.add_argument("--threads", type=int, default=0, help="encoder threads (default: all cores)")
    p.add_argument("--scale-dtype", choices=("f32", "f16"), default="f32", help="how scales are stored")
    p.add_argument("--no-quantize-embeddings", action="store_true", help="keep the token embedding in f32")
    p.add_argument("--no-quantize-lm-head", action="store_true", help="keep an untied LM head in f32")
    p.add_argument("--no-stats", action="store_true", help="skip the entropy / zstd-19 figures for inspect")
    p.set_defaults(func=run_compress)

    p = sub.add_parser("inspect", help="show where every byte of a .tqm file goes")
    p.add_argument("container", help=".tqm file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tensors", action="store_true", help="one row per tensor (default: per tensor kind)")
    p.set_defaults(func=run_inspect)

    p = sub.add_parser("verify", help="check every checksum and decode every tensor of a .tqm file")
    p.add_argument("container", help=".tqm file")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=run_verify)


def run_compress(args) -> int:
    import sys
    import time

    from tinyqmoe.compress.writer import BITS_CHOICES, CompressOptions, write_container
    from tinyqmoe.errors import UsageError
    from tinyqmoe.fileio import check_output
    from tinyqmoe.formats.load import open_checkpoint

    check_output(args.output)   # before any work: a bad -o costs nothing
    bits = BITS_CHOICES.get(str(args.bits).lower())
    if bits is None:
        raise UsageError(f"unsupported --bits {args.bits!r} (choose 8, 4 or ternary)")
    chunk_size = args.chunk_size
    if chunk_size == "auto":
        from tinyqmoe.hw import cache_sizes
        from tinyqmoe.tiling import codec_chunk_bytes

        chunk_size = codec_chunk_bytes(cache_sizes())
    opts = CompressOptions(bits=bits, group=args.group, codec=args.codec, lzw_max_bits=args.lzw_max_bits,
                           chunk_size=chunk_size, threads=args.threads, scale_dtype=args.scale_dtype,
                           quantize_embeddings=not args.no_quantize_embeddings,
                           quantize_lm_head=not args.no_quantize_lm_head, stats=not args.no_stats).check()
    t0 = time.perf_counter()
    with open_checkpoint(args.model) as ckpt:
        write_container(ckpt, args.output, opts)
    from tinyqmoe.compress.reader import open_container
    from tinyqmoe.compress.inspect import account, tensor_rows

    with open_container(args.output) as c:
        parts, rows = account(c), tensor_rows(c)
    bf16 = sum(r.bf16_bytes for r in rows)
    print(f"wrote {args.output}: {parts['file']:,} bytes, {bf16 / parts['file']:.2f}x smaller than bf16 "
          f"({8 * parts['file'] / sum(r.n_values for r in rows):.2f} bits/weight all in) "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _kind(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[3:]) if name.startswith("model.layers.") else name


def run_inspect(args) -> int:
    import dataclasses
    import json

    from tinyqmoe.compress.reader import open_container
    from tinyqmoe.compress.inspect import account, tensor_rows

    with open_container(args.container) as c:
        parts, rows = account(c), tensor_rows(c)
        version = c.version
    if args.json:
        out = {"file": str(args.container), "version": list(version), "bytes": parts,
               "tensors": [dict(dataclasses.asdict(r), bits_per_weight=r.bits_per_weight) for r in rows]}
        print(json.dumps(out, indent=1))
        return 0
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r.name if args.tensors else _kind(r.name), []).append(r)
    W = max(34, max(len(k) for k in groups) + 1)
    head = (f"{'tensor' if args.tensors else 'tensor kind (all layers)':<{W}} {'n':>3} {'qtype':>7} {'codec':>5} "
            f"{'bf16 B':>12} {'quant B':>12} {'scales B':>10} {'stored B':>12} {'H0 B':>12} {'zstd19 B':>12} "
            f"{'bits/w':>6} {'x bf16':>6} {'SQNR dB':>7}")
    print(head)
    print("-" * len(head))

    def line(label, rs):
        n = sum(r.n_values for r in rs)
        b = [sum(getattr(r, f) for r in rs) for f in ("bf16_bytes", "quant_bytes", "scale_bytes", "stored_bytes")]
        h0 = sum(r.entropy_bytes for r in rs)
        z = sum(r.zstd19_bytes for r in rs) if all(r.zstd19_bytes >= 0 for r in rs) else -1
        codecs = ",".join(sorted({r.codec for r in rs}))
        qts = ",".join(sorted({r.qtype for r in rs}))
        sq = [r.sqnr_db for r in rs if r.sqnr_db == r.sqnr_db]
        print(f"{label:<{W}} {len(rs):>3} {qts:>7} {codecs:>5} {b[0]:>12,} {b[1]:>12,} {b[2]:>10,} {b[3]:>12,} "
              f"{h0:>12,.0f} {z:>12,} {8 * (b[3] + b[2]) / n:>6.3f} {b[0] / max(b[3] + b[2], 1):>6.2f} "
              f"{(sum(sq) / len(sq)) if sq else float('nan'):>7.1f}")
        return n, b, h0, z

    for label, rs in groups.items():
        n, b, h0, z = line(label, rs)
    print("-" * len(head))
    line("all tensors", rows)
    print()
    print("file bytes: " + " + ".join(f"{k} {parts[k]:,}" for k in
                                       ("fixed_header", "scales", "payload", "padding", "index", "json_header"))
          + f" = {parts['file']:,}")
    n = sum(r.n_values for r in rows)
    print(f"all in: {8 * parts['file'] / n:.3f} bits/weight, {sum(r.bf16_bytes for r in rows) / parts['file']:.2f}x "
          f"smaller than bf16, {sum(r.quant_bytes + r.scale_bytes for r in rows) / parts['file']:.2f}x smaller than "
          f"the same quantized model uncompressed (payload + scales)")
    return 0


def run_verify(args) -> int:
    from tinyqmoe.compress.inspect import verify

    r = verify(args.container, args.threads)
    print(f"{args.container}: OK ({r['tensors']} tensors, {r['chunks']} chunks, {r['file']:,} bytes; "
          f"every checksum matches and every chunk decodes)")
    return 0
