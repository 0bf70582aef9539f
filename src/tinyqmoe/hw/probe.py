"""The cache probe: time per memory access against working-set size, compiled loops.

Grid: working sets from min_bytes to max_bytes, points_per_octave per doubling (geometric).
Two methods per size, each repeated and summarised by the median:
  - triangular: the paper's triangular nest: inner extent i grows with the outer index, each
    inner pass walks the first i lines of a random chain (reuse distance = working set,
    dependent loads, no order a prefetcher can follow); up to tri_max_bytes, because it
    needs whole passes (~L accesses each);
  - chase: a dependent pointer chase around the same random cycle of all L lines, a fixed
    number of hops per size, up to max_bytes (the cross-check, and the L3 / memory tail).
Pages are touched before timing, and huge pages are requested with madvise; the result says
whether transparent huge pages were on and how many bytes the buffers actually got.

Default grid top: 256 MiB, at 4 points per octave up to 8 MiB and 2 beyond, so that the
default run stays < 5 s (~1.5-4 s here). It does not reach 4x the last-level cache on this
machine type: sysfs states an L3 of 480 MiB, and a 2 GiB sweep (`--max-mib 2048`, ~15 s)
shows why that is plausible: the chase stays at 40-60 ns (cache, not DRAM) up to 256 MiB,
finds its L3 knee at 256 MiB, and reaches DRAM latency (~130 ns) only past 1 GiB. Under load
from other tenants a knee shows up much lower (5-20 MiB): the share of a shared L3 one
process gets, which is what a defensive tiling should plan for. L1/L2 (what the engine
uses) are well inside the default grid.
"""
from __future__ import annotations

import dataclasses
import mmap
import re
import time
from dataclasses import dataclass, field

import numpy as np

from tinyqmoe.hw import sysinfo
from tinyqmoe.hw.knees import Knee, detect_knees
from tinyqmoe.hw.probe_kernels import (pointer_chase, triangular_walk,
                                       write_random_chain)

LINE = 64  # bytes


@dataclass(frozen=True)
class ProbeConfig:
    min_bytes: int = 4 << 10
    max_bytes: int = 256 << 20      # chase grid top
    tri_max_bytes: int = 8 << 20    # triangular grid top (it needs whole passes)
    points_per_octave: int = 4      # up to tri_max_bytes
    tail_points_per_octave: int = 2  # beyond it (chase only)
    repeats: int = 5
    accesses: int = 1 << 16         # timed accesses per measurement (at least)
    seed: int = 0


FULL = ProbeConfig()
QUICK = ProbeConfig(max_bytes=16 << 20, tri_max_bytes=8 << 20, repeats=3)
TINY = ProbeConfig(max_bytes=256 << 10, tri_max_bytes=128 << 10, points_per_octave=2,
                   tail_points_per_octave=1, repeats=1, accesses=1 << 12)


@dataclass
class ProbeResult:
    cpu_model: str
    sizes: list[int]                 # bytes, the grid
    triangular_ns: list[float]       # median ns per access (NaN above tri_max_bytes)
    chase_ns: list[float]
    knees_triangular: list[int]      # bytes
    knees_chase: list[int]
    l1: int | None                   # estimates, bytes
    l2: int | None
    l3: int | None
    os_sizes: dict[str, int]         # sysfs, for comparison only
    lscpu: dict[str, str]
    thp_mode: str
    huge_page_bytes: int             # of the probe buffers, from /proc/self/smaps
    seconds: float
    config: dict = field(default_factory=dict)
    quick: bool = False
    measured_at: str = ""            # UTC, ISO 8601

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["triangular_ns"] = [None if not np.isfinite(v) else round(v, 3) for v in self.triangular_ns]
        d["chase_ns"] = [None if not np.isfinite(v) else round(v, 3) for v in self.chase_ns]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeResult":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for key in ("triangular_ns", "chase_ns"):
            d[key] = [float("nan") if v is None else float(v) for v in d[key]]
        return cls(**d)


def size_grid(cfg: ProbeConfig) -> list[int]:
    """Geometric grid of working sets in whole lines, min_bytes..max_bytes inclusive."""
    def octave_grid(lo: float, hi: float, per_octave: int) -> np.ndarray:
        steps = max(0, int(round(np.log2(hi / lo) * per_octave)))
        return lo * 2.0 ** (np.arange(steps + 1) / per_octave)

    split = min(cfg.tri_max_bytes, cfg.max_bytes)
    raw = list(octave_grid(cfg.min_bytes, split, cfg.points_per_octave))
    if cfg.max_bytes > split:
        raw += list(octave_grid(split, cfg.max_bytes, cfg.tail_points_per_octave)[1:])
    return sorted({max(1, int(round(s / LINE))) * LINE for s in raw})


def alloc_touched(nbytes: int) -> tuple[np.ndarray, mmap.mmap]:
    """Anonymous mapping as int64, huge pages requested, every page written once."""
    mem = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mem.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass  # THP disabled: 4 KiB pages, reported as huge_page_bytes = 0
    buf = np.frombuffer(mem, dtype=np.int64)
    buf[:: 4096 // 8] = 0
    return buf, mem


def huge_page_bytes(arrays: list[np.ndarray]) -> int:
    """AnonHugePages of the mappings holding these arrays (0 when unknown)."""
    try:
        text = open("/proc/self/smaps").read()
    except OSError:
        return 0
    starts = [a.ctypes.data for a in arrays]
    total = 0
    for m in re.finditer(r"^([0-9a-f]+)-([0-9a-f]+) .*?\nAnonHugePages:\s+(\d+) kB", text,
                         re.M | re.S):
        lo, hi = int(m.group(1), 16), int(m.group(2), 16)
        if any(lo <= s < hi for s in starts):
            total += int(m.group(3)) * 1024
    return total


def time_triangular(buf: np.ndarray, n_lines: int, start: int, cfg: ProbeConfig) -> list[float]:
    """ns per access of the triangular walk whose working set ends at n_lines lines: outer
    i over the last sixth of (0, L] at most (one grid step), rounds to reach cfg.accesses."""
    band = max(1, min(n_lines // 6, cfg.accesses // n_lines))
    lo, hi = n_lines - band + 1, n_lines + 1
    count = (lo + n_lines) * band // 2
    rounds = max(1, cfg.accesses // count)
    out = []
    for _ in range(cfg.repeats):
        triangular_walk(buf, 1, n_lines, n_lines + 1, start)  # warm right before each timing
        t0 = time.perf_counter_ns()
        triangular_walk(buf, rounds, lo, hi, start)
        out.append((time.perf_counter_ns() - t0) / (rounds * count))
    return out


def time_chase(buf: np.ndarray, n_lines: int, start: int, cfg: ProbeConfig) -> list[float]:
    """ns per hop of a dependent chase around the random cycle through n_lines lines."""
    out = []
    for _ in range(cfg.repeats):
        pointer_chase(buf, start, min(n_lines, 4 * cfg.accesses))  # warm right before each timing
        t0 = time.perf_counter_ns()
        pointer_chase(buf, start, cfg.accesses)
        out.append((time.perf_counter_ns() - t0) / cfg.accesses)
    return out


def level_estimates(tri: list[Knee], chase: list[Knee]) -> list[int]:
    """L1, L2, L3 from the triangular knees, the chase's knees filling levels beyond them."""
    levels = [k.size for k in tri]
    top = 2 * tri[-1].size if tri else 0  # beyond the last triangular knee
    levels += [k.size for k in chase if k.size > top][: 3 - len(levels)]
    return levels[:3]


def run_probe(cfg: ProbeConfig = FULL, progress: bool = True, quick: bool = False) -> ProbeResult:
    """Measure both curves over the grid, find knees, estimate L1/L2/L3."""
    t_start = time.perf_counter()
    sizes = size_grid(cfg)
    rng = np.random.default_rng(cfg.seed)
    buf, mem = alloc_touched(sizes[-1])
    huge = huge_page_bytes([buf])
    tri_ns, chase_ns = [], []
    from tinyqmoe.progress import bar as progress_bar

    it = progress_bar(sizes, desc="probe working-set sizes", unit="size", leave=False, enabled=progress)
    for size in it:
        n_lines = size // LINE
        start = write_random_chain(buf, n_lines, rng)
        tri_ns.append(float(np.median(time_triangular(buf, n_lines, start, cfg)))
                      if size <= cfg.tri_max_bytes else float("nan"))
        chase_ns.append(float(np.median(time_chase(buf, n_lines, start, cfg))))
    del buf
    mem.close()
    k_tri = detect_knees(sizes, tri_ns)
    k_chase = detect_knees(sizes, chase_ns)
    levels = level_estimates(k_tri, k_chase) + [None, None, None]
    return ProbeResult(
        cpu_model=sysinfo.cpu_model(), sizes=sizes, triangular_ns=tri_ns, chase_ns=chase_ns,
        knees_triangular=[k.size for k in k_tri], knees_chase=[k.size for k in k_chase],
        l1=levels[0], l2=levels[1], l3=levels[2], os_sizes=sysinfo.os_cache_sizes(),
        lscpu=sysinfo.lscpu_cache_lines(), thp_mode=sysinfo.thp_mode(), huge_page_bytes=huge,
        seconds=time.perf_counter() - t_start, config=dataclasses.asdict(cfg), quick=quick,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
