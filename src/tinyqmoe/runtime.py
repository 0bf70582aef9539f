"""Process-wide runtime settings: thread counts for numba kernels and the BLAS under numpy."""
from __future__ import annotations

import ctypes
import glob
import os


def set_threads(n: int | None) -> int:
    """Use n threads (default: all cores) in numba parallel kernels and in numpy's BLAS."""
    import numba

    n = int(n or os.cpu_count() or 1)
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    _set_blas_threads(n)
    return n


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
