"""Hardware facts measured, not looked up: cache sizes from latency probes.

Public API for the engine:
    cache_sizes(refresh=False, quick=True) -> CacheSizes(l1, l2, l3, source)
    cache_sizes_for("tile") -> the same, after saying on stderr which measurement is used

Whenever measured sizes are used, an L1 or L2 more than 2x away from what the OS states (sysfs)
is logged as a warning, once per process: a bad probe changes tiles, chunk sizes and prefill blocks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("tinyqmoe")
DISAGREE = 2.0   # warn when a measured L1/L2 is more than this factor from the OS's figure
_warned: set = set()

# Conservative stand-ins when a probe finds no knee (a very noisy run): never the OS figures.
FALLBACK_L1 = 32 << 10
FALLBACK_L2 = 256 << 10


@dataclass(frozen=True)
class CacheSizes:
    l1: int            # bytes, data cache per core (probe estimate)
    l2: int            # bytes
    l3: int | None     # bytes, None when no third knee was found
    source: str        # "full probe", "quick probe", "hw.json, full probe", ... ("+ fallback" if a level is missing)
    os_sizes: dict = field(default_factory=dict, compare=False)  # {"L1": bytes, ...} from sysfs
    measured_at: str = ""

    def describe(self) -> str:
        """'L1 32 KiB, L2 512 KiB, L3 16 MiB (hw.json, full probe of 2026-12-01T14:00:00Z; OS: L1 32 KiB, ...)'."""
        from tinyqmoe.units import format_binary as b

        own = f"L1 {b(self.l1)}, L2 {b(self.l2)}" + (f", L3 {b(self.l3)}" if self.l3 else "")
        when = f" of {self.measured_at}" if self.measured_at else ""
        osz = ", ".join(f"{k} {b(v)}" for k, v in sorted(self.os_sizes.items())) or "not stated"
        return f"{own} ({self.source}{when}; OS: {osz})"

    def disagreements(self) -> list[str]:
        """Levels whose measured size is more than DISAGREE x away from the OS's figure."""
        from tinyqmoe.units import format_binary as b

        out = []
        for name, mine in (("L1", self.l1), ("L2", self.l2)):
            theirs = self.os_sizes.get(name)
            if theirs and mine and not 1 / DISAGREE <= mine / theirs <= DISAGREE:
                out.append(f"{name} measured {b(mine)} is {mine / theirs:.2g}x the OS's {b(theirs)}")
        return out


def from_result(result) -> CacheSizes:
    """CacheSizes from a ProbeResult; missing levels fall back to conservative constants."""
    source = "quick probe" if result.quick else "full probe"
    l1, l2 = result.l1, result.l2
    if l1 is None or l2 is None:
        source += " + fallback"
        l1 = l1 or FALLBACK_L1
        l2 = l2 if l2 and l2 > l1 else max(FALLBACK_L2, 4 * l1)
    sizes = CacheSizes(l1=int(l1), l2=int(l2), l3=None if result.l3 is None else int(result.l3),
                       source=source, os_sizes=dict(result.os_sizes or {}), measured_at=result.measured_at)
    _warn_once(sizes)
    return sizes


def _warn_once(sizes: CacheSizes) -> None:
    bad = sizes.disagreements()
    key = (sizes.measured_at, tuple(bad))
    if bad and key not in _warned:
        _warned.add(key)
        log.warning("measured caches disagree with the OS: %s (%s); `tinyqmoe probe --refresh` measures again",
                    "; ".join(bad), sizes.source)


def probe_cached(refresh: bool = False, quick: bool = False, progress: bool = False,
                 path=None):
    """The ProbeResult for this CPU: from hw.json unless refresh (or only a quick probe is
    stored and a full one is asked for); a fresh probe is written back. -> (result, fresh)"""
    from tinyqmoe.hw import store, sysinfo
    from tinyqmoe.hw.probe import FULL, QUICK, run_probe

    key = sysinfo.cpu_model()
    if not refresh:
        cached = store.load(key, path)
        if cached is not None and (quick or not cached.quick):
            return cached, False
    result = run_probe(QUICK if quick else FULL, progress=progress, quick=quick)
    store.save(result, path)
    return result, True


def cache_sizes(refresh: bool = False, quick: bool = True) -> CacheSizes:
    """Cache sizes for this CPU in bytes, from $TINYQMOE_CACHE/hw.json or a fresh probe
    (quick: ~1-2 s, enough for L1/L2) that is then stored there."""
    result, fresh = probe_cached(refresh=refresh, quick=quick)
    sizes = from_result(result)
    if not fresh:
        sizes = CacheSizes(sizes.l1, sizes.l2, sizes.l3, f"hw.json, {sizes.source}",
                           sizes.os_sizes, sizes.measured_at)
    return sizes


def cache_sizes_for(user: str, quiet: bool = False) -> CacheSizes:
    """cache_sizes(), after one line on stderr saying which measurement `user` takes them from."""
    import sys

    sizes = cache_sizes()
    if not quiet:
        print(f"{user}: caches {sizes.describe()}", file=sys.stderr)
    return sizes


__all__ = ["CacheSizes", "cache_sizes", "cache_sizes_for", "probe_cached", "from_result"]
