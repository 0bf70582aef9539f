"""Sizes as users write them, and as tinyqmoe prints them (docs/conventions.md, "Sizes").

One parser for every size option: a bare `K`/`M`/`G`/`T` is decimal like `KB`/`MB`/`GB`/`TB`
(10^3, 10^6, ...); `KiB`/`MiB`/`GiB`/`TiB` are binary. Units are case-insensitive; no unit means bytes.
Reports use `MB` = 10^6 bytes; a binary figure is always spelled `MiB`/`KiB`.
"""
from __future__ import annotations

import math
import re

from tinyqmoe.errors import UsageError

MB = 10**6

UNITS = {"": 1, "b": 1,
         "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
         "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str | int, what: str = "size") -> int:
    """'300MB', '1.5GiB', '400M', '4096', 123456 -> bytes (a positive int; fractions round down).

    `what` names the option in the error message (e.g. "--max-memory")."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: not a size: {text!r}")
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.fullmatch(str(text))
        unit = m.group(2).lower() if m else None
        if unit not in UNITS:
            raise UsageError(f"{what}: cannot read {text!r} as a size (e.g. 4096, 256K, 300MB, 1.5GB, 512MiB; "
                             f"K/M/G are decimal, KiB/MiB/GiB binary)")
        number = float(m.group(1))
        if not math.isfinite(number):
            raise UsageError(f"{what}: {text!r} is not a finite size")
        value = int(number * UNITS[unit])
    if value < 1:
        raise UsageError(f"{what}: {text!r} is not a positive size")
    return value


def format_mb(n_bytes: float, digits: int = 0) -> str:
    """Bytes as decimal megabytes: 137418862 -> '137 MB'."""
    return f"{n_bytes / MB:,.{digits}f} MB"


def format_binary(n_bytes: float) -> str:
    """A cache-like size in binary units, exact when it can be: 32768 -> '32 KiB', 524288 -> '512 KiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            v = n_bytes / scale
            return f"{v:.0f} {unit}" if v >= 10 or v == int(v) else f"{v:.1f} {unit}"
    return f"{int(n_bytes)} B"


def ratio_words(size: float, reference: float, reference_name: str) -> str:
    """One ratio, always >= 1, its direction in words: '2.20x smaller than bf16', '1.09x larger than raw int8'."""
    if size <= 0 or reference <= 0:
        return f"(no ratio to {reference_name})"
    if round(max(size, reference) / min(size, reference), 2) == 1.0:
        return f"the same size as {reference_name} (within 0.5%)"
    if size <= reference:
        return f"{reference / size:.2f}x smaller than {reference_name}"
    return f"{size / reference:.2f}x larger than {reference_name}"
