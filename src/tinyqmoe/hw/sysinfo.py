"""What the operating system says about this CPU: model, cache sizes, huge pages.

These figures are printed next to the probe's estimates for comparison only; the probe
never reads them as an input (on VMs they can be wrong: this machine type's sysfs states
an L3 of 480 MiB, an aggregate the hypervisor reports, not what one guest can use).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def parse_size(text: str) -> int:
    """'48K' / '2048K' / '2 MiB' / '480 MiB (1 instance)' -> bytes."""
    m = re.match(r"\s*([\d.]+)\s*([KMG]?)(i?B)?", text.strip(), re.I)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def os_cache_sizes(root: Path = SYSFS_CACHE) -> dict[str, int]:
    """Data/unified cache sizes of cpu0 from sysfs: {'L1': bytes, 'L2': ..., 'L3': ...}."""
    sizes: dict[str, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified"):
            sizes[f"L{level}"] = size
    return sizes


def lscpu_cache_lines() -> dict[str, str]:
    """lscpu's own cache lines ('L1d', 'L2', 'L3' -> text), {} when lscpu is absent."""
    exe = shutil.which("lscpu")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = {}
    for line in out.splitlines():
        m = re.match(r"\s*(L1d|L2|L3) cache:\s*(.+)", line)
        if m:
            lines[m.group(1)] = m.group(2).strip()
    return lines


def thp_mode(path: Path = THP_ENABLED) -> str:
    """The bracketed transparent-huge-page mode ('always', 'madvise', 'never'), or 'unknown'."""
    try:
        m = re.search(r"\[(\w+)\]", path.read_text())
    except OSError:
        return "unknown"
    return m.group(1) if m else "unknown"


def cpu_model() -> str:
    """'model name (family F model M stepping S)' from /proc/cpuinfo: the hw.json key."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model", "stepping") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break
    except OSError:
        import platform
        return platform.processor() or platform.machine() or "unknown"
    name = fields.get("model name", "unknown")
    return (f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
            f" stepping {fields.get('stepping', '?')})")
