"""Hardware facts measured, not looked up: cache sizes from latency probes.

Public API for the engine:
    cache_sizes(refresh=False, quick=True) -> CacheSizes(l1, l2, l3, source)
"""
from __future__ import annotations

from dataclasses import dataclass

# Conservative stand-ins when a probe finds no knee (a very noisy run): never the OS figures.
FALLBACK_L1 = 32 << 10
FALLBACK_L2 = 256 << 10


@dataclass(frozen=True)
class CacheSizes:
    l1: int            # bytes, data cache per core (probe estimate)
    l2: int            # bytes
    l3: int | None     # bytes, None when no third knee was found
    source: str        # "hw.json", "probe", "probe (quick)", or "... + fallback"


def from_result(result) -> CacheSizes:
    """CacheSizes from a ProbeResult; missing levels fall back to conservative constants."""
    source = "probe (quick)" if result.quick else "probe"
    l1, l2 = result.l1, result.l2
    if l1 is None or l2 is None:
        source += " + fallback"
        l1 = l1 or FALLBACK_L1
        l2 = l2 if l2 and l2 > l1 else max(FALLBACK_L2, 4 * l1)
    return CacheSizes(l1=int(l1), l2=int(l2), l3=None if result.l3 is None else int(result.l3),
                      source=source)


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
        sizes = CacheSizes(sizes.l1, sizes.l2, sizes.l3, sizes.source.replace("probe", "hw.json", 1))
    return sizes


__all__ = ["CacheSizes", "cache_sizes", "probe_cached", "from_result"]
