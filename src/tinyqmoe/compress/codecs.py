"""The codec registry: each codec is a pair of pure functions on bytes.

  encode(data: bytes-like, **params) -> bytes          (params: lzw max_bits, zstd level)
  decode_into(out: uint8 [raw_size], src: bytes-like)  (raises typed FormatErrors)

and, for the fused reader, a numba core `core(out uint8[::1], src uint8[::1]) -> int64` (0 or a negative
status of compress/common.py), `None` for raw (a copy). The container stores the codec id per chunk
(docs/FORMAT.md §7); `auto` is a writer policy (writer.py), not a codec.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from tinyqmoe.compress.common import (CODEC_ALIASES, CODEC_IDS, CODEC_NAMES, LZW, RANS, RAW, TANS, ZSTD,
                                      check_codec_id)
from tinyqmoe.errors import CorruptionDetected, UsageError

ZSTD_LEVEL = 19


def _as_bytes(data) -> bytes:
    return data.tobytes() if isinstance(data, np.ndarray) else bytes(data)


# ---- raw (id 0)
def raw_encode(data, **_) -> bytes:
    return _as_bytes(data)


def raw_decode_into(out: np.ndarray, src) -> None:
    if len(src) != out.size:
        raise CorruptionDetected(f"raw chunk holds {len(src)} bytes, raw_size says {out.size}", field="raw")
    out[:] = np.frombuffer(src, np.uint8)


# ---- zstd (id 3), the baseline
def zstd_encode(data, level: int = ZSTD_LEVEL, **_) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(_as_bytes(data))


def zstd_decode_into(out: np.ndarray, src) -> None:
    from tinyqmoe.compress.zstd_decode import zstd_decode_into as dec

    dec(out, src)


# ---- lzw (id 1) and rans (id 2): numba, encoders and decoders in separate modules
def lzw_encode(data, max_bits: int = 16, **_) -> bytes:
    from tinyqmoe.compress.lzw_encode import lzw_encode as enc

    return enc(data, max_bits)


def lzw_decode_into(out: np.ndarray, src) -> None:
    from tinyqmoe.compress.lzw_decode import lzw_decode_into as dec

    dec(out, src)


def rans_encode(data, **_) -> bytes:
    from tinyqmoe.compress.rans_encode import rans_encode as enc

    return enc(data)


def rans_decode_into(out: np.ndarray, src) -> None:
    from tinyqmoe.compress.rans_decode import rans_decode_into as dec

    dec(out, src)


# ---- tans (id 4): 8-lane tANS, the fastest-decoding entropy coder of our own
def tans_encode(data, **_) -> bytes:
    from tinyqmoe.compress.tans_encode import tans_encode as enc

    return enc(data)


def tans_decode_into(out: np.ndarray, src) -> None:
    from tinyqmoe.compress.tans_decode import tans_decode_into as dec

    dec(out, src)


@dataclasses.dataclass(frozen=True)
class Codec:
    id: int
    name: str
    encode: Callable[..., bytes]
    decode_into: Callable[[np.ndarray, object], None]
    core: str | None            # "module:function" of the numba core, imported on demand (core_of)


REGISTRY: dict[int, Codec] = {
    RAW: Codec(RAW, "raw", raw_encode, raw_decode_into, None),
    LZW: Codec(LZW, "lzw", lzw_encode, lzw_decode_into, "lzw_decode:lzw_decode_core"),
    RANS: Codec(RANS, "rans", rans_encode, rans_decode_into, "rans_decode:rans_decode_core"),
    ZSTD: Codec(ZSTD, "zstd", zstd_encode, zstd_decode_into, "zstd_decode:zstd_decode_core"),
    TANS: Codec(TANS, "tans", tans_encode, tans_decode_into, "tans_decode:tans_decode_core"),
}
CHOICES = ("lzw", "ans", "rans", "tans", "zstd", "raw", "auto")


def core_of(codec_id: int):
    """The numba core `(out, src) -> int64` of a codec id (None for raw)."""
    import importlib

    c = codec_by_id(codec_id)
    if c.core is None:
        return None
    module, name = c.core.split(":")
    return getattr(importlib.import_module(f"tinyqmoe.compress.{module}"), name)


def codec_by_name(name: str) -> Codec:
    key = CODEC_ALIASES.get(name, name)
    if key not in CODEC_IDS:
        raise UsageError(f"unknown codec {name!r} (choose from {', '.join(CHOICES)})")
    return REGISTRY[CODEC_IDS[key]]


def codec_by_id(codec_id: int) -> Codec:
    return REGISTRY[CODEC_IDS[check_codec_id(codec_id)]]


def encode(name: str, data, **params) -> bytes:
    return codec_by_name(name).encode(data, **params)


def decode(codec_id: int, src, raw_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode one stream into out (uint8 [raw_size], allocated if None)."""
    if out is None:
        out = np.empty(raw_size, np.uint8)
    codec_by_id(codec_id).decode_into(out, src)
    return out


__all__ = ["Codec", "REGISTRY", "CHOICES", "CODEC_NAMES", "codec_by_name", "codec_by_id", "core_of", "encode",
           "decode"]
