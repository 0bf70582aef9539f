"""Process-wide runtime settings: the threads of numba kernels, of the BLAS, and our own pool.

numba's parallel kernels (decode) and a pool of Python threads (long prefills, each thread running
single-threaded BLAS on its own block of rows) are never busy at the same time.

How OpenMP threads wait between the ~150 parallel regions of a decoded token matters twice over
(default model, 2 threads, measured): on a quiet machine a short spin (GOMP_SPINCOUNT=10000, then
sleep) decodes at 89 tok/s where sleeping at once (PASSIVE) gives 45 (the wake-up latency of every
region); on a machine already busy with other work spinning is a disaster (1-10 tok/s, threads spin
while the peer they wait for is descheduled) and PASSIVE gives 37. So the policy is chosen once,
when the process starts, from how many other threads are runnable right now: PASSIVE if the
machine is busy, a short spin if not.
Set OMP_WAIT_POLICY or GOMP_SPINCOUNT yourself to override.
"""
from __future__ import annotations

import ctypes
import glob
import os
from concurrent.futures import ThreadPoolExecutor

QUIET_SPINCOUNT = "10000"


def other_runnable_threads(samples: int = 5) -> float:
    """How many threads besides this one want a CPU right now: the median of a few readings of the
    running-entities field of /proc/loadavg. (The load average itself would count this program's own
    recent past, e.g. the previous run of a benchmark.)"""
    import statistics
    import time

    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            return 0.0
        time.sleep(0.002)
    return statistics.median(counts)


def _choose_wait_policy() -> None:
    """Read by libgomp when numba first starts its OpenMP pool, so it must be set before that."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    if other_runnable_threads() >= max(1, (os.cpu_count() or 1) // 2):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
        os.environ["GOMP_SPINCOUNT"] = QUIET_SPINCOUNT


_choose_wait_policy()

_pool: ThreadPoolExecutor | None = None
_pool_threads = 0


def set_threads(n: int | None) -> int:
    """Use n threads (default: all cores) for numba kernels and for the prefill pool."""
    global _pool, _pool_threads
    import numba

    n = int(n or os.cpu_count() or 1)
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    _set_blas_threads(1)
    if n != _pool_threads:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_threads = ThreadPoolExecutor(n, thread_name_prefix="tinyqmoe"), n
    return n


def threads() -> int:
    return max(1, _pool_threads)


def parallel_map(fn, items) -> list:
    """fn over items on the shared pool (threads release the GIL in BLAS and nogil kernels)."""
    if _pool is None or _pool_threads == 1:
        return [fn(x) for x in items]
    return list(_pool.map(fn, items))


def _set_blas_threads(n: int) -> None:
    """numpy's bundled OpenBLAS has a setter; without threadpoolctl we call it through ctypes."""
    import numpy

    libdir = os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "libscipy_openblas*")):
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return


def stored_l2_bytes() -> int | None:
    """The L2 size measured by `tinyqmoe probe` for this CPU, if one is stored (never probes)."""
    try:
        from tinyqmoe.hw import from_result, store, sysinfo

        result = store.load(sysinfo.cpu_model())
        return None if result is None else from_result(result).l2
    except Exception:  # a missing or unreadable hw.json only means "not tuned"
        return None
