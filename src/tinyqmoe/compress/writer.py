"""Write a .tqm container (docs/FORMAT.md) from a Checkpoint, one tensor at a time.

Peak memory is about the largest tensor (its float32 copy, its quantized form and its streams).
The file is written to a temporary name in the target directory, fsynced and renamed, so an
interruption never leaves a partial target.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tinyqmoe.compress import codecs
from tinyqmoe.compress.common import CODEC_IDS, CODEC_ALIASES, LZW_MAX_BITS, LZW_MIN_BITS, crc32
from tinyqmoe.compress.container_format import (CHUNK_DTYPE, FIXED_HEADER, FIXED_HEADER_SIZE, MAGIC,
                                                VERSION_MAJOR, VERSION_MINOR, align_up)
from tinyqmoe.compress.entropy import order0_entropy_bits, zstd_size
from tinyqmoe.compress.quant import BITS_QTYPE, quantize
from tinyqmoe.errors import UsageError

BITS_CHOICES = {"8": 8, "4": 4, "ternary": 2, "2": 2}
DEFAULT_GROUP = {8: 0, 4: 32, 2: 64}      # 0 = one scale per output channel


@dataclasses.dataclass
class CompressOptions:
    bits: int = 8                   # 8 int8, 4 int4, 2 ternary
    group: int | None = None        # inputs per scale; None = the default for the bit width, 0 = per channel
    codec: str = "auto"             # lzw | rans (ans) | tans | zstd | raw | auto (see _choose_streams)
    lzw_max_bits: int = 16
    chunk_size: int = 256 * 1024    # target raw bytes per chunk, rounded to whole rows
    threads: int = 0                # 0 = os.cpu_count()
    scale_dtype: str = "f32"        # f32 | f16
    quantize_embeddings: bool = True
    quantize_lm_head: bool = True
    zstd_level: int = 19
    stats: bool = True              # record the order-0 entropy and zstd-19 size per tensor

    def check(self) -> "CompressOptions":
        if self.bits not in DEFAULT_GROUP:
            raise UsageError(f"unsupported bits {self.bits} (choose 8, 4 or ternary)")
        name = CODEC_ALIASES.get(self.codec, self.codec)
        if name != "auto" and name not in CODEC_IDS:
            raise UsageError(f"unknown codec {self.codec!r} (choose from {', '.join(codecs.CHOICES)})")
        self.codec = name
        if not LZW_MIN_BITS <= self.lzw_max_bits <= LZW_MAX_BITS:
            raise UsageError(f"--lzw-max-bits must be {LZW_MIN_BITS}..{LZW_MAX_BITS}, got {self.lzw_max_bits}")
        if not 1 <= self.chunk_size <= (1 << 30):
            raise UsageError(f"chunk size must be 1 B..1 GiB, got {self.chunk_size}")
        if self.scale_dtype not in ("f32", "f16"):
            raise UsageError(f"unknown scale dtype {self.scale_dtype!r} (choose f32 or f16)")
        if self.group is not None and self.group < 0:
            raise UsageError(f"group must be >= 0, got {self.group}")
        if self.threads < 0:
            raise UsageError(f"threads must be >= 0, got {self.threads}")
        return self

    @property
    def group_size(self) -> int:
        return DEFAULT_GROUP[self.bits] if self.group is None else self.group


def is_quantized_name(name: str, shape: tuple, opts: CompressOptions) -> bool:
    """Which tensors are quantized: every 2-D weight (embeddings / LM head as configured); norms stay f32."""
    if len(shape) != 2:
        return False
    if name == "model.embed_tokens.weight":
        return opts.quantize_embeddings
    if name == "lm_head.weight":
        return opts.quantize_lm_head
    return True


def tensor_group(n_in: int, group: int, bits: int) -> int:
    """The group used for a tensor with n_in inputs: `group` (0 = n_in), or, when it does not divide
    n_in, the largest divisor of n_in below it that holds whole bytes (recorded per tensor)."""
    if group == 0 or group >= n_in:
        return n_in
    per = 8 // bits
    return next(d for d in range(group, 0, -1) if n_in % d == 0 and d % per == 0) if n_in % per == 0 else n_in


def chunk_rows(rows: int, row_bytes: int, chunk_size: int) -> list[tuple[int, int]]:
    """Split rows into (row_start, row_count) blocks of about chunk_size bytes, whole rows each."""
    per = max(1, chunk_size // max(row_bytes, 1))
    return [(r, min(per, rows - r)) for r in range(0, rows, per)]


def _encode_chunks(payload: np.ndarray, blocks, codec: str, opts: CompressOptions, pool) -> list[bytes]:
    """payload uint8 [rows, row_bytes] -> one stream per row block."""
    params = {"max_bits": opts.lzw_max_bits, "level": opts.zstd_level}
    enc = codecs.codec_by_name(codec).encode
    jobs = [payload[r:r + n].reshape(-1) for r, n in blocks]
    return list(pool.map(lambda part: enc(part, **params), jobs))


def _tensor_streams(name, w, opts, pool):
    """Quantize (or not) one tensor -> (record fields, scale bytes, payload [rows, row_bytes], stats)."""
    shape = tuple(int(x) for x in w.shape)
    stats: dict = {}
    if is_quantized_name(name, shape, opts):
        g = tensor_group(shape[1], opts.group_size, opts.bits)
        qt, err = quantize(w, opts.bits, g, opts.scale_dtype)
        payload = np.ascontiguousarray(qt.q).view(np.uint8)
        sdt = np.float16 if opts.scale_dtype == "f16" else np.float32
        scale = np.ascontiguousarray(qt.scale.astype(sdt)).tobytes()
        rec = {"qtype": BITS_QTYPE[opts.bits], "group": qt.group, "scale_dtype": opts.scale_dtype}
        stats.update(rel_frobenius=err.rel_frobenius, sqnr_db=err.sqnr_db)
    else:
        payload = np.ascontiguousarray(w, dtype="<f4").reshape(shape[0] if len(shape) == 2 else 1, -1).view(np.uint8)
        scale = b""
        rec = {"qtype": "f32", "group": 0, "scale_dtype": None}
    rec.update(name=name, shape=list(shape), rows=int(payload.shape[0]), row_bytes=int(payload.shape[1]))
    return rec, scale, payload, stats


def write_container(ckpt, path: str | Path, options: CompressOptions | None = None,
                    progress: bool = True) -> dict:
    """Compress a Checkpoint into `path` (.tqm). Returns the JSON header that was written."""
    opts = (options or CompressOptions()).check()
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(f"output directory {str(path.parent)!r} does not exist", path)
    threads = opts.threads or os.cpu_count() or 1
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f, ThreadPoolExecutor(threads) as pool:
            header = _write_body(f, ckpt, opts, pool, progress)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return header


def _write_body(f, ckpt, opts: CompressOptions, pool, progress: bool) -> dict:
    from tqdm import tqdm

    f.write(b"\0" * FIXED_HEADER_SIZE)
    pos = FIXED_HEADER_SIZE
    records, chunks = [], []
    names = list(ckpt.names)
    bar = tqdm(names, desc="compress", unit="tensor", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for name in bar:
        rec, scale, payload, stats = _tensor_streams(name, ckpt.get(name), opts, pool)
        blocks = chunk_rows(rec["rows"], rec["row_bytes"], opts.chunk_size)
        codec, streams, sizes = _choose_streams(rec, payload, blocks, opts, pool)
        if opts.stats:   # the bounds, on the same chunks (zstd-19 reused from `auto` when it was tried)
            z19 = sizes.get("zstd") if opts.zstd_level == 19 else None
            if z19 is None:
                z19 = sum(pool.map(lambda rb: zstd_size(payload[rb[0]:rb[0] + rb[1]], 19), blocks))
            stats.update(entropy_bits=order0_entropy_bits(payload), zstd19_bytes=int(z19))
        # §6.1 scales, then §6.2 chunks, each from a 64-aligned start
        pos = _pad_to(f, pos, align_up(pos))
        rec.update(scale_offset=pos if scale else 0, scale_size=len(scale), scale_crc32=crc32(scale) if scale else 0)
        f.write(scale)
        pos = _pad_to(f, pos + len(scale), align_up(pos + len(scale)))
        rec.update(first_chunk=len(chunks), n_chunks=len(blocks), codec=codec, stats=stats)
        for (r, n), s in zip(blocks, streams):
            chunks.append((pos, len(s), n * rec["row_bytes"], r, n, crc32(s), CODEC_IDS[codec]))
            f.write(s)
            pos += len(s)
        records.append(rec)
        bar.set_postfix_str(f"{codec} {sum(map(len, streams)) / max(payload.size, 1):.3f}x")
    index = np.zeros(len(chunks), CHUNK_DTYPE)
    for i, c in enumerate(chunks):
        index[i]["offset"], index[i]["stored_size"], index[i]["raw_size"] = c[0], c[1], c[2]
        index[i]["row_start"], index[i]["row_count"], index[i]["crc32"], index[i]["codec"] = c[3], c[4], c[5], c[6]
    index_offset = _pad_to(f, pos, align_up(pos))
    index_bytes = index.tobytes()
    f.write(index_bytes)
    header = {
        "format": "tqm",
        "config": ckpt.config.to_hf_dict(),
        "tokenizer": ckpt.tokenizer.to_dict() if ckpt.tokenizer is not None else None,
        "source": {"path": str(ckpt.path), "dtypes": dict(ckpt.source_dtypes)},
        "options": dataclasses.asdict(opts),
        "tensors": records,
    }
    js = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    f.write(js)
    fixed = FIXED_HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, 0, index_offset, len(index_bytes),
                              index_offset + len(index_bytes), len(js), crc32(index_bytes), crc32(js), 0)
    f.seek(0)
    f.write(fixed + crc32(fixed).to_bytes(4, "little"))
    return header


# auto: the fastest-decoding codec whose tensor is within AUTO_SLACK of the smallest. Decode speed order
# measured on the default model's int8 chunks (docs/compression.md): raw > tans > zstd > lzw > rans.
AUTO_BY_DECODE_SPEED = ("raw", "tans", "zstd", "lzw", "rans")
AUTO_SLACK = 1.005


def _choose_streams(rec, payload, blocks, opts, pool) -> tuple[str, list[bytes], dict[str, int]]:
    """Encode with the asked codec, or with each and keep the fastest-decoding one within 0.5% of the
    smallest (auto). f32 tensors are stored raw. -> (codec, streams, {codec tried: total bytes})"""
    if opts.codec != "auto" and rec["qtype"] != "f32":
        streams = _encode_chunks(payload, blocks, opts.codec, opts, pool)
        return opts.codec, streams, {opts.codec: sum(map(len, streams))}
    candidates = AUTO_BY_DECODE_SPEED if rec["qtype"] != "f32" else ("raw",)
    sizes, kept = {}, {}                 # streams kept: the current choice's and the smallest's (memory)
    for name in candidates:
        kept[name] = _encode_chunks(payload, blocks, name, opts, pool)
        sizes[name] = sum(map(len, kept[name]))
        choice = next(n for n in sizes if sizes[n] <= AUTO_SLACK * min(sizes.values()))
        kept = {n: v for n, v in kept.items() if n in (choice, min(sizes, key=sizes.get))}
    if choice not in kept:               # dropped earlier, then the smallest moved
        kept[choice] = _encode_chunks(payload, blocks, choice, opts, pool)
    return choice, kept[choice], sizes


def _pad_to(f, pos: int, target: int) -> int:
    f.write(b"\0" * (target - pos))
    return target
