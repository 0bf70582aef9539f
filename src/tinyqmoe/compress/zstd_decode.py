"""zstd decoding (docs/FORMAT.md §7.4) by libzstd's `ZSTD_decompress`, called from nopython code.

The library is the one inside the `zstandard` wheel (its cffi backend exports the ZSTD_* API), or the
system's libzstd.so.1. It is loaded into the process with llvmlite and its functions are declared as
numba external functions, so `zstd_decode_core` refers to them by symbol name (not by an address) and
stays cacheable; any njit code (the fused reader) can call it. `ZSTD_decompress` allocates its own
context per call, so the core is thread-safe and releases the GIL.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

from tinyqmoe.compress.common import E_LIBRARY, OK, raise_status


def _find_libzstd() -> str | None:
    """Path of a libzstd exporting ZSTD_decompress: the zstandard wheel's, else the system's."""
    candidates = []
    try:
        import zstandard

        candidates += sorted(glob.glob(os.path.join(os.path.dirname(zstandard.__file__), "_cffi*.so")))
    except ImportError:
        pass
    candidates += [p for p in (ctypes.util.find_library("zstd"), "libzstd.so.1") if p]
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            lib.ZSTD_decompress, lib.ZSTD_getFrameContentSize, lib.ZSTD_findFrameCompressedSize  # noqa: B018
        except (OSError, AttributeError):
            continue
        return path
    return None


LIBZSTD = _find_libzstd()
if LIBZSTD is not None:
    llvm.load_library_permanently(LIBZSTD)

_u = types.uintp              # size_t and pointers alike (64-bit platforms)
_decompress = types.ExternalFunction("ZSTD_decompress", _u(_u, _u, _u, _u))
_content_size = types.ExternalFunction("ZSTD_getFrameContentSize", types.uint64(_u, _u))
_frame_size = types.ExternalFunction("ZSTD_findFrameCompressedSize", _u(_u, _u))


@njit(cache=True, nogil=True)
def zstd_decode_core(out, src):
    # out uint8 [raw_size] <- src uint8 [stored], exactly one zstd frame announcing raw_size; -> 0 or E_LIBRARY
    # (libzstd errors are size_t values above any real size, so every check below is a size comparison)
    n, ns = np.uint64(out.size), np.uint64(src.size)
    src_p, out_p = src.ctypes.data, out.ctypes.data
    if _frame_size(src_p, ns) != ns or _content_size(src_p, ns) != n:
        return E_LIBRARY
    if _decompress(out_p, n, src_p, ns) != n:
        return E_LIBRARY
    return OK


def zstd_decode_into(out: np.ndarray, src) -> None:
    """Decode one zstd frame (bytes-like) into out (uint8 [raw_size]); typed errors on bad input.
    Without a loadable libzstd (LIBZSTD is None) the zstandard package's API does it, with the same checks."""
    if LIBZSTD is not None:
        raise_status(zstd_decode_core(out, np.frombuffer(src, np.uint8)), "zstd")
        return
    import zstandard

    src = bytes(src)
    try:
        if zstandard.frame_content_size(src) != out.size:
            raise_status(E_LIBRARY, "zstd")
        data = zstandard.ZstdDecompressor().decompress(src, max_output_size=out.size)
    except zstandard.ZstdError:
        raise_status(E_LIBRARY, "zstd")
    if len(data) != out.size:
        raise_status(E_LIBRARY, "zstd")
    out[:] = np.frombuffer(data, np.uint8)
