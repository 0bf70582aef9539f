"""Write a .tqm container (docs/FORMAT.md) from a Checkpoint, streamed in blocks of rows.

Peak memory is one row block (STREAM_BLOCK_BYTES of float32 plus its quantized form and streams), one
tensor's scales and, for `--codec auto` on tensors up to KEEP_CANDIDATES_BYTES, every candidate codec's
streams of that tensor: about the same for a 135M or an 8B model. The file is written through
`fileio.atomic_output` (a PID-tagged temporary beside the target, fsynced and renamed), so an
interruption never leaves a partial target.
"""
from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tinyqmoe.compress import codecs
from tinyqmoe.compress.common import CODEC_IDS, CODEC_ALIASES, LZW_MAX_BITS, LZW_MIN_BITS, crc32
from tinyqmoe.compress.container_format import (CHUNK_DTYPE, FIXED_HEADER, FIXED_HEADER_SIZE, MAGIC,
                                                VERSION_MAJOR, VERSION_MINOR, align_up, chunk_checksum,
                                                QTYPES, index_bytes as encode_index)
from tinyqmoe.compress.entropy import zstd_size
from tinyqmoe.compress.quant import QuantError, QuantizedTensor, dequantize, pack_bits, quantize
from tinyqmoe.errors import UnsupportedModel, UsageError
from tinyqmoe.fileio import atomic_output, check_output

BITS_CHOICES = {"8": 8, "4": 4, "ternary": 2, "2": 2}
DEFAULT_GROUP = {8: 0, 4: 32, 2: 64}      # 0 = one scale per output channel
# The token embedding and the LM head: 8 bits in a 4-bit container unless asked (llama.cpp's Q4_1 files
# keep token_embd at Q8_0 too); the container's own width otherwise.
DEFAULT_EMBED_BITS = {8: 8, 4: 8, 2: 2}


@dataclasses.dataclass
class CompressOptions:
    bits: int = 8                   # 8 int8, 4 uint4 (int4 if symmetric), 2 ternary
    symmetric: bool = False         # bits 4: int4 (-8..7 times a scale) instead of uint4 (scale and offset)
    embed_bits: int | None = None   # the embedding and LM head: None = DEFAULT_EMBED_BITS[bits]
    group: int | None = None        # inputs per scale; None = the default for the bit width, 0 = per channel
    codec: str = "auto"             # lzw | rans (ans) | tans | zstd | raw | auto (see _choose_streams)
    lzw_max_bits: int = 16
    chunk_size: int = 256 * 1024    # target raw bytes per chunk, rounded to whole rows
    threads: int = 0                # 0 = os.cpu_count()
    scale_dtype: str | None = None  # f32 | f16; None: f16 for uint4 containers (Q4_1's), f32 otherwise
    quantize_embeddings: bool = True
    quantize_lm_head: bool = True
    zstd_level: int = 19
    stats: bool = True              # record the order-0 entropy and zstd-19 size per tensor
    format_major: int = VERSION_MAJOR   # 2 (XXH64 chunk checksums); 1 writes version 1.1 (CRC-32) for old readers
    keep_q4_0: bool = True          # uint4 in groups of 32 from a GGUF's Q4_0 tensor: its blocks as stored
                                    # (scale d, offset -8d: exact), not re-quantized from their floats

    def check(self) -> "CompressOptions":
        if self.bits not in DEFAULT_GROUP:
            raise UsageError(f"unsupported bits {self.bits} (choose 8, 4 or ternary)")
        if self.symmetric and self.bits != 4:
            raise UsageError("--symmetric applies to --bits 4 only (8 bits and ternary are symmetric)")
        if self.embed_bits is None:
            self.embed_bits = DEFAULT_EMBED_BITS[self.bits]
        if self.embed_bits not in DEFAULT_GROUP:
            raise UsageError(f"unsupported embedding bits {self.embed_bits} (choose 8, 4 or ternary)")
        if self.format_major == 1 and "uint4" in (self.qtype, self.tensor_qtype(EMBEDDING_NAMES[0])):
            raise UsageError("format version 1 has no uint4 (4 bits with offsets): use --symmetric, or format 2")
        if self.scale_dtype is None:
            self.scale_dtype = "f16" if self.qtype == "uint4" else "f32"
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
        if self.format_major not in (1, 2):
            raise UsageError(f"format version {self.format_major}: choose 2 (current) or 1 (for readers of 1.x)")
        return self

    @property
    def group_size(self) -> int:
        return DEFAULT_GROUP[self.bits] if self.group is None else self.group

    @property
    def qtype(self) -> str:
        """The qtype of the quantized linears."""
        return qtype_for(self.bits, self.symmetric)

    def tensor_qtype(self, name: str) -> str:
        """The qtype of quantized tensor `name`: the embedding and LM head at embed_bits."""
        if name in EMBEDDING_NAMES:
            return qtype_for(self.embed_bits if self.embed_bits is not None else self.bits, self.symmetric)
        return self.qtype


EMBEDDING_NAMES = ("model.embed_tokens.weight", "lm_head.weight")


def qtype_for(bits: int, symmetric: bool = False) -> str:
    return {8: "int8", 4: "int4" if symmetric else "uint4", 2: "ternary"}[bits]


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


def write_container(ckpt, path: str | Path, options: CompressOptions | None = None,
                    progress: bool = True) -> dict:
    """Compress a Checkpoint into `path` (.tqm). Returns the JSON header that was written.

    Memory stays bounded whatever the model's size: tensors are read, quantized and encoded in blocks
    of whole chunks (STREAM_BLOCK_BYTES of float32 rows), never as a whole float32 tensor."""
    opts = (options or CompressOptions()).check()
    check_output(path)
    threads = opts.threads or os.cpu_count() or 1
    with atomic_output(path) as f, ThreadPoolExecutor(threads) as pool:
        return _write_body(f, ckpt, opts, pool, progress)


def _write_body(f, ckpt, opts: CompressOptions, pool, progress: bool) -> dict:
    from tinyqmoe.progress import bar as progress_bar

    f.write(b"\0" * FIXED_HEADER_SIZE)
    pos = FIXED_HEADER_SIZE
    records, chunks = [], []
    bar = progress_bar(list(ckpt.names), desc="compress tensors", unit="tensor", enabled=progress)
    for name in bar:
        pos, rec = _write_tensor(f, pos, ckpt, name, opts, pool, chunks)
        records.append(rec)
        stored = sum(c[1] for c in chunks[rec["first_chunk"]:]) + rec.get("scale_size", 0)
        bar.set_postfix_str(f"{rec['codec']} {8 * stored / max(int(np.prod(rec['shape'])), 1):.2f} bits/weight stored")
    index = np.zeros(len(chunks), CHUNK_DTYPE)
    for i, c in enumerate(chunks):
        index[i]["offset"], index[i]["stored_size"], index[i]["raw_size"] = c[0], c[1], c[2]
        index[i]["row_start"], index[i]["row_count"], index[i]["check"], index[i]["codec"] = c[3], c[4], c[5], c[6]
    index_offset = _pad_to(f, pos, align_up(pos))
    index_bytes = encode_index(index, opts.format_major)
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
    major, minor = (VERSION_MAJOR, VERSION_MINOR) if opts.format_major == VERSION_MAJOR else (1, 1)
    fixed = FIXED_HEADER.pack(MAGIC, major, minor, 0, index_offset, len(index_bytes),
                              index_offset + len(index_bytes), len(js), crc32(index_bytes), crc32(js), 0)
    f.seek(0)
    f.write(fixed + crc32(fixed).to_bytes(4, "little"))
    return header


# ---- one tensor, streamed in row blocks

# auto: the fastest-decoding codec whose tensor is within AUTO_SLACK of the smallest. Decode speed order
# measured on the default model's int8 chunks (docs/compression.md): raw > tans > zstd > lzw > rans.
AUTO_BY_DECODE_SPEED = ("raw", "tans", "zstd", "lzw", "rans")
AUTO_SLACK = 1.005


def auto_choice(sizes: dict[str, int]) -> str:
    """The first codec of AUTO_BY_DECODE_SPEED (among those tried) within AUTO_SLACK of the smallest."""
    smallest = min(sizes.values())
    return next(c for c in AUTO_BY_DECODE_SPEED if c in sizes and sizes[c] <= AUTO_SLACK * smallest)

STREAM_BLOCK_BYTES = 16 << 20     # float32 rows read, quantized and encoded at a time (whole chunks)
KEEP_CANDIDATES_BYTES = 32 << 20  # `auto` keeps every codec's streams of a tensor up to this payload;
                                  # a larger tensor is measured in a first pass and encoded in a second


@dataclasses.dataclass
class _Plan:
    """How one tensor is laid out: its record fields, its chunks, and the row blocks it streams in."""
    name: str
    shape: tuple[int, ...]
    qtype: str
    group: int
    rows: int
    row_bytes: int
    n_in: int
    chunks: list[tuple[int, int]]      # (row_start, row_count)
    blocks: list[tuple[int, int]]      # (first chunk, end chunk): the rows read at once

    @property
    def payload_bytes(self) -> int:
        return self.rows * self.row_bytes


def _plan(name: str, shape: tuple[int, ...], opts: CompressOptions) -> _Plan:
    rows = shape[0] if len(shape) == 2 else 1
    n_in = shape[1] if len(shape) == 2 else int(np.prod(shape))
    if is_quantized_name(name, shape, opts):
        qtype = opts.tensor_qtype(name)
        bits = QTYPES[qtype]
        group, row_bytes = tensor_group(n_in, opts.group_size, bits), n_in * bits // 8
    else:
        group, qtype, row_bytes = 0, "f32", 4 * n_in
    chunks = chunk_rows(rows, row_bytes, opts.chunk_size)
    per_block = max(1, STREAM_BLOCK_BYTES // max(4 * n_in * chunks[0][1], 1))   # chunks per row block
    blocks = [(i, min(i + per_block, len(chunks))) for i in range(0, len(chunks), per_block)]
    return _Plan(name, tuple(shape), qtype, group, rows, row_bytes, n_in, chunks, blocks)


class _Quantized:
    """A tensor's quantization, accumulated block by block: scales [O, G], error sums, byte histogram."""

    def __init__(self, plan: _Plan, opts: CompressOptions):
        self.plan, self.opts = plan, opts
        self.scale = np.empty((plan.rows, plan.n_in // plan.group), np.float32) if plan.group else None
        self.offset = np.empty_like(self.scale) if plan.qtype == "uint4" else None
        self.signal = self.noise = 0.0
        self.counts = np.zeros(256, np.int64)

    def rows(self, ckpt, r0: int, r1: int) -> np.ndarray:
        """Payload rows r0..r1: uint8 [r1 - r0, row_bytes], from the float32 rows of this block only."""
        p = self.plan
        if self.keeps_blocks(ckpt):   # one read of the blocks; their weights are the file's exactly
            qt, err = _q4_0_as_uint4(ckpt, p, r0, r1, self.opts.scale_dtype), QuantError(0.0, float("inf"))
            w = dequantize(qt)
        else:
            w = ckpt.rows(p.name, r0, r1) if len(p.shape) == 2 else ckpt.get(p.name).reshape(1, -1)  # finite
            if p.qtype == "f32":
                payload = np.ascontiguousarray(w, dtype="<f4").view(np.uint8)
                self.counts += np.bincount(payload.reshape(-1), minlength=256)
                return payload
            qt, err = quantize(w, group=p.group, scale_dtype=self.opts.scale_dtype, qtype=p.qtype)
        self.scale[r0:r1] = qt.scale
        if self.offset is not None:
            self.offset[r0:r1] = qt.offset
        signal = float(np.sum(np.square(w, dtype=np.float64)))
        self.signal += signal
        self.noise += err.rel_frobenius ** 2 * signal
        payload = np.ascontiguousarray(qt.q).view(np.uint8)
        self.counts += np.bincount(payload.reshape(-1), minlength=256)
        return payload

    def keeps_blocks(self, ckpt) -> bool:
        return (self.opts.keep_q4_0 and self.plan.qtype == "uint4" and self.plan.group == 32
                and ckpt.source_dtypes.get(self.plan.name) == "q4_0")

    def stats(self) -> dict:
        if self.plan.qtype == "f32":
            return {}
        rel = (self.noise / self.signal) ** 0.5 if self.signal > 0 else 0.0
        sqnr = 10.0 * np.log10(self.signal / self.noise) if self.noise > 0 and self.signal > 0 else float("inf")
        return {"rel_frobenius": rel, "sqnr_db": float(sqnr)}

    def entropy_bits(self) -> float:
        c = self.counts[self.counts > 0]
        return float(-(c * np.log2(c / c.sum())).sum()) if c.size else 0.0

    def scale_bytes(self) -> bytes:
        if self.scale is None:
            return b""
        sdt = np.float16 if self.opts.scale_dtype == "f16" else np.float32
        if self.offset is None:
            return np.ascontiguousarray(self.scale.astype(sdt)).tobytes()
        # §6.1: per row its G scales, then its G offsets: [O, 2, G]
        return np.ascontiguousarray(np.stack([self.scale, self.offset], axis=1).astype(sdt)).tobytes()


def _q4_0_as_uint4(ckpt, plan: _Plan, r0: int, r1: int, scale_dtype: str) -> QuantizedTensor:
    """Rows r0..r1 of a GGUF Q4_0 tensor as uint4 without re-quantizing: W = d * (q - 8) = q * d + (-8d),
    so the scale is the block's d (negative where llama.cpp's quantizer made it so) and the offset -8d,
    both exact in binary16 (a power-of-two multiple) unless |8d| overflows it."""
    q, d = ckpt.q4_0_rows(plan.name, r0, r1)
    offset = -8.0 * d
    if scale_dtype == "f16" and np.any(np.abs(offset) > np.finfo(np.float16).max):
        raise UnsupportedModel(f"{plan.name}: a Q4_0 block's 8 x d exceeds binary16", ckpt.path)
    return QuantizedTensor(q=pack_bits(q, 4), scale=d, group=32, bits=4, scale_dtype=scale_dtype, offset=offset)


def _streams(ckpt, plan: _Plan, quant: _Quantized, names: tuple[str, ...], opts: CompressOptions, pool,
             zstd19: bool):
    """Per row block: (chunk indexes, {codec: [stream per chunk]}, [zstd-19 size per chunk] or None)."""
    params = {"max_bits": opts.lzw_max_bits, "level": opts.zstd_level}
    for c0, c1 in plan.blocks:
        r0 = plan.chunks[c0][0]
        r1 = plan.chunks[c1 - 1][0] + plan.chunks[c1 - 1][1]
        payload = quant.rows(ckpt, r0, r1)
        parts = [payload[r - r0:r - r0 + n].reshape(-1) for r, n in plan.chunks[c0:c1]]
        out = {}
        for name in names:
            enc = codecs.codec_by_name(name).encode
            out[name] = list(pool.map(lambda part: enc(part, **params), parts))
        z = list(pool.map(lambda part: zstd_size(part, 19), parts)) if zstd19 else None
        yield range(c0, c1), out, z


def _write_tensor(f, pos: int, ckpt, name: str, opts: CompressOptions, pool, chunks_out: list) -> tuple[int, dict]:
    """Scales (§6.1), then chunks (§6.2), each from a 64-aligned start. The scales' place is reserved
    and filled once every block is quantized."""
    plan = _plan(name, tuple(ckpt.shapes[name]), opts)
    quant = _Quantized(plan, opts)
    per_group = (2 if plan.qtype == "uint4" else 1) * (2 if opts.scale_dtype == "f16" else 4)   # + an offset
    scale_size = plan.rows * (plan.n_in // plan.group) * per_group if plan.group else 0
    pos = _pad_to(f, pos, align_up(pos))
    scale_offset = pos
    f.write(b"\0" * scale_size)
    pos = _pad_to(f, pos + scale_size, align_up(pos + scale_size))
    first_chunk = len(chunks_out)
    if plan.qtype == "f32":
        candidates = ("raw",)              # f32 tensors are stored raw
    elif opts.codec != "auto":
        candidates = (opts.codec,)
    else:
        candidates = AUTO_BY_DECODE_SPEED
    want_z19 = opts.stats and not (len(candidates) > 1 and opts.zstd_level == 19)   # else reuse `auto`'s zstd
    sizes = dict.fromkeys(candidates, 0)
    if len(candidates) > 1 and plan.payload_bytes > KEEP_CANDIDATES_BYTES:
        for _, out, _ in _streams(ckpt, plan, _Quantized(plan, opts), candidates, opts, pool, False):
            for c in candidates:           # pass 1 measures every codec; pass 2 writes the smallest
                sizes[c] += sum(map(len, out[c]))
        candidates = (auto_choice(sizes),)
    kept: dict[str, list[bytes]] = {c: [] for c in candidates}
    z19 = 0
    for idx, out, z in _streams(ckpt, plan, quant, candidates, opts, pool, want_z19):
        z19 += sum(z) if z else 0
        if len(candidates) == 1:
            pos = _write_chunks(f, pos, plan, idx, out[candidates[0]], candidates[0], chunks_out, opts)
        else:
            for c in candidates:
                kept[c] += out[c]
    if len(candidates) > 1:                # a small tensor with every codec's streams kept
        sizes = {c: sum(map(len, kept[c])) for c in candidates}
        best = auto_choice(sizes)
        pos = _write_chunks(f, pos, plan, range(len(plan.chunks)), kept[best], best, chunks_out, opts)
        candidates = (best,)
    scale = quant.scale_bytes()
    end = f.tell()
    f.seek(scale_offset)
    f.write(scale)
    f.seek(end)
    stats = quant.stats()
    if opts.stats:   # the bounds, on the same chunks (zstd-19 reused from `auto` when it was tried)
        stats.update(entropy_bits=quant.entropy_bits(), zstd19_bytes=int(z19 if want_z19 else sizes["zstd"]))
    rec = {"qtype": plan.qtype, "group": plan.group, "scale_dtype": opts.scale_dtype if plan.group else None,
           "name": name, "shape": list(plan.shape), "rows": plan.rows, "row_bytes": plan.row_bytes,
           "scale_offset": scale_offset if scale else 0, "scale_size": len(scale),
           "scale_crc32": crc32(scale) if scale else 0, "first_chunk": first_chunk, "n_chunks": len(plan.chunks),
           "codec": candidates[0], "stats": stats}
    return pos, rec


def _write_chunks(f, pos: int, plan: _Plan, idx, streams: list[bytes], codec: str, chunks_out: list,
                  opts: CompressOptions) -> int:
    for i, s in zip(idx, streams):
        r, n = plan.chunks[i]
        raw, cid = n * plan.row_bytes, CODEC_IDS[codec]
        chunks_out.append((pos, len(s), raw, r, n, chunk_checksum(opts.format_major, s, cid, raw), cid))
        f.write(s)
        pos += len(s)
    return pos


def _pad_to(f, pos: int, target: int) -> int:
    f.write(b"\0" * (target - pos))
    return target
