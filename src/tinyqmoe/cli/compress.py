"""`tinyqmoe compress | inspect | verify`: build, account for and check a .tqm container."""
from __future__ import annotations

import argparse

from tinyqmoe.cli.common import add_model_argument, add_progress_option, add_threads_option


def _chunk_size(text: str):
    """'auto' or a size (tinyqmoe.units: 256K = 256,000 bytes, 256KiB = 262,144)."""
    if text == "auto":
        return "auto"
    from tinyqmoe.errors import UsageError
    from tinyqmoe.units import parse_size

    try:
        return parse_size(text, "--chunk-size")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def register(sub) -> None:
    p = sub.add_parser("compress", help="quantize and compress a model into one .tqm file",
                       description="Quantize a model (8-bit, 4-bit or ternary) and compress the weights "
                                   "into a self-describing .tqm container (docs/FORMAT.md).")
    add_model_argument(p, help="HF directory, .gguf file, 'default', or ORG/NAME[:QUANT] from the local "
                               "Hugging Face cache")
    p.add_argument("-o", "--output", required=True,
                   help="output .tqm path; replaced atomically if it exists (keeping its permissions); a symlink "
                        "is followed and the file it points to replaced; only regular files are written "
                        "(a directory, /dev/null or another device is refused before any work)")
    p.add_argument("--bits", default="8",
                   help="8, 4 or ternary (default 8). 4 = qtype uint4: values 0..15 with a scale and an offset "
                        "per group (llama.cpp's Q4_1 form); --symmetric for int4 (-8..7 times a scale)")
    p.add_argument("--symmetric", action="store_true",
                   help="with --bits 4: symmetric int4 (a scale per group, no offset) instead of uint4")
    p.add_argument("--embed-bits", default=None, metavar="BITS",
                   help="bits of the token embedding and LM head: 8, 4 or ternary (default: 8 in a 4-bit "
                        "container, as llama.cpp keeps token_embd at Q8_0 in Q4_1 files; else as --bits)")
    p.add_argument("--group", type=int, default=None,
                   help="inputs per scale; 0 = one per output channel (default: 0 for 8 bits, 32 for 4, 64 for "
                        "ternary; the embedding and LM head use the container's group whatever their bits)")
    p.add_argument("--codec", default="auto", help="lzw | ans | tans | zstd | raw | auto (per tensor, the "
                   "fastest-decoding codec within 0.5%% of the smallest; default)")
    p.add_argument("--lzw-max-bits", type=int, default=16, help="LZW maximum code width, 9..24 (default 16)")
    p.add_argument("--chunk-size", type=_chunk_size, default=256 * 1024, metavar="SIZE",
                   help="raw bytes per chunk, whole rows (default 256KiB; K/M are decimal, KiB/MiB binary); "
                        "'auto' = half the measured L2, from `tinyqmoe probe` (a quick probe runs if none is stored)")
    add_threads_option(p, "encoder threads")
    p.add_argument("--scale-dtype", choices=("f32", "f16"), default=None,
                   help="how scales (and uint4's offsets) are stored (default: f16 with --bits 4 uint4, as Q4_1; "
                        "f32 otherwise)")
    p.add_argument("--no-quantize-embeddings", action="store_true", help="keep the token embedding in f32")
    p.add_argument("--no-quantize-lm-head", action="store_true", help="keep an untied LM head in f32")
    p.add_argument("--no-stats", action="store_true", help="skip the entropy / zstd-19 figures for inspect")
    p.add_argument("--format-version", type=int, choices=(1, 2), default=2,
                   help="2 (default: XXH64 chunk checksums) or 1 (format 1.1, CRC-32, for tinyqmoe before 2.0 files)")
    add_progress_option(p)
    p.set_defaults(func=run_compress)

    p = sub.add_parser("inspect", help="show where every byte of a .tqm file goes")
    p.add_argument("container", help=".tqm file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tensors", action="store_true", help="one row per tensor (default: per tensor kind)")
    p.set_defaults(func=run_inspect)

    p = sub.add_parser("verify", help="check every checksum and decode every tensor of a .tqm file")
    p.add_argument("container", help=".tqm file")
    add_threads_option(p, "decoder threads")
    p.set_defaults(func=run_verify)


def run_compress(args) -> int:
    import time

    from tinyqmoe.cli.common import info, show_progress, threads_arg
    from tinyqmoe.compress.writer import BITS_CHOICES, CompressOptions, write_container
    from tinyqmoe.errors import UsageError
    from tinyqmoe.fileio import check_output
    from tinyqmoe.formats.load import open_checkpoint
    from tinyqmoe.locate import resolve

    check_output(args.output)   # before any work: a bad -o costs nothing
    bits = BITS_CHOICES.get(str(args.bits).lower())
    if bits is None:
        raise UsageError(f"unsupported --bits {args.bits!r} (choose 8, 4 or ternary)")
    embed_bits = None if args.embed_bits is None else BITS_CHOICES.get(str(args.embed_bits).lower())
    if args.embed_bits is not None and embed_bits is None:
        raise UsageError(f"unsupported --embed-bits {args.embed_bits!r} (choose 8, 4 or ternary)")
    chunk_size = args.chunk_size
    if chunk_size == "auto":
        from tinyqmoe.hw import cache_sizes_for
        from tinyqmoe.tiling import codec_chunk_bytes

        chunk_size = codec_chunk_bytes(cache_sizes_for("compress --chunk-size auto", quiet=args.quiet))
    threads = threads_arg(args.threads) or 0
    opts = CompressOptions(bits=bits, symmetric=args.symmetric, embed_bits=embed_bits,
                           group=args.group, codec=args.codec, lzw_max_bits=args.lzw_max_bits,
                           chunk_size=chunk_size, threads=threads, scale_dtype=args.scale_dtype,
                           quantize_embeddings=not args.no_quantize_embeddings,
                           quantize_lm_head=not args.no_quantize_lm_head, stats=not args.no_stats,
                           format_major=args.format_version).check()
    t0 = time.perf_counter()
    with open_checkpoint(resolve(args.model)) as ckpt:
        write_container(ckpt, args.output, opts, progress=show_progress(args))
    from tinyqmoe.compress.inspect import size_summary
    from tinyqmoe.compress.reader import open_container

    with open_container(args.output) as c:
        summary = size_summary(c)
    info(args, f"wrote {args.output}: {summary.describe()}; {time.perf_counter() - t0:.1f} s")
    return 0


def _vs(size: int, reference: int) -> str:
    """'3.62x smaller' / '2.00x larger': a table cell in the words of tinyqmoe.units.ratio_words."""
    from tinyqmoe.units import ratio_words

    words = ratio_words(size, reference, "")
    return "same" if words.startswith("the same") else words.rsplit(" than", 1)[0]


def _kind(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[3:]) if name.startswith("model.layers.") else name


def run_inspect(args) -> int:
    import dataclasses
    import json

    from tinyqmoe.compress.reader import open_container
    from tinyqmoe.compress.inspect import account, size_summary, tensor_rows
    from tinyqmoe.units import ratio_words

    with open_container(args.container) as c:
        parts, rows, summary = account(c), tensor_rows(c), size_summary(c)
        version, checksum = c.version, c.checksum
    if args.json:
        out = {"file": str(args.container), "version": list(version), "chunk_checksum": checksum, "bytes": parts,
               "stored_bits_per_weight": summary.stored_bits_per_weight,
               "quantized_bits_per_weight": summary.quantized_bits_per_weight,
               "uncoded_bytes": summary.uncoded_bytes, "bf16_bytes": summary.bf16_bytes,
               "tensors": [dict(dataclasses.asdict(r), bits_per_weight=r.bits_per_weight) for r in rows]}
        print(json.dumps(out, indent=1))
        return 0
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r.name if args.tensors else _kind(r.name), []).append(r)
    W = max(34, max(len(k) for k in groups) + 1)
    head = (f"{'tensor' if args.tensors else 'tensor kind (all layers)':<{W}} {'n':>3} {'qtype':>7} {'codec':>5} "
            f"{'bf16 B':>12} {'quant B':>12} {'scales B':>10} {'stored B':>12} {'H0 B':>12} {'zstd19 B':>12} "
            f"{'bits/w':>6} {'vs bf16':>13} {'SQNR dB':>7}")
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
              f"{h0:>12,.0f} {z:>12,} {8 * (b[3] + b[2]) / n:>6.3f} {_vs(b[3] + b[2], b[0]):>13} "
              f"{(sum(sq) / len(sq)) if sq else float('nan'):>7.1f}")
        return n, b, h0, z

    for label, rs in groups.items():
        n, b, h0, z = line(label, rs)
    print("-" * len(head))
    line("all tensors", rows)
    print()
    print("file bytes: " + " + ".join(f"{k} {parts[k]:,}" for k in
                                       ("fixed_header", "scales", "payload", "padding", "index", "json_header"))
          + f" = {parts['file']:,} (format {version[0]}.{version[1]}, {checksum} per chunk)")
    q = summary
    print(f"all in: {q.stored_bits_per_weight:.3f} bits/weight as stored "
          f"(quantized, before the codec: {q.quantized_bits_per_weight:.3f}); "
          f"{ratio_words(q.file_bytes, q.uncoded_bytes, 'raw ' + q.qtypes + ' (the same weights uncoded)')}, "
          f"{ratio_words(q.file_bytes, q.bf16_bytes, 'bf16')}")
    return 0


def run_verify(args) -> int:
    from tinyqmoe.compress.inspect import verify

    from tinyqmoe.cli.common import threads_arg

    r = verify(args.container, threads_arg(args.threads) or 0)
    print(f"{args.container}: OK ({r['tensors']} tensors, {r['chunks']} chunks, {r['file']:,} bytes; "
          f"every checksum matches and every chunk decodes)")
    return 0
