"""Process-wide runtime settings: the threads of numba kernels, of the BLAS, and our own pool.

One policy: numba's parallel kernels (decode) and a pool of Python threads (long prefills, each
thread running single-threaded BLAS on its own block of rows) are never busy at the same time, and
idle threads sleep instead of spinning. On a 2-core machine shared with other work, spinning OpenMP
or OpenBLAS threads that wait for a descheduled peer made decoding ~10x slower than one thread.
"""
from __future__ import annotations

import ctypes
import glob
import os
from concurrent.futures import ThreadPoolExecutor

# Read by libgomp when numba first starts its OpenMP pool: waiting threads sleep at once.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
