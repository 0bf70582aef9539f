"""One block of huge-page memory for a model's resident weight rows.

Decoding reads every weight once per token, as one long stream. numpy gives each tensor its own
allocation, on 4 KB pages for any tensor under 4 MiB (all of a small model's layer tensors): a 135 MB
model is then ~33,000 pages, each a TLB miss per token, and the CPU's prefetchers start over at every
page. An `Arena` reserves one private anonymous mapping, asks the kernel for transparent huge pages on
it (`madvise(MADV_HUGEPAGE)`: used where THP is "madvise" or "always", ignored where it is "never"),
and hands out consecutive, 64-byte aligned arrays in the order the forward pass reads them. Pages
become resident only when written, so reserving generously costs nothing; the arrays keep the mapping
alive (numpy holds the buffer), and it is unmapped when the last of them goes.
"""
from __future__ import annotations

import ctypes
import mmap

import numpy as np

HUGE_PAGE = 2 << 20
ALIGN = 64
_MADV_HUGEPAGE = 14


class Arena:
    """Bump allocation of C-contiguous arrays from one mapping of at least `capacity` bytes."""

    def __init__(self, capacity: int):
        size = max(HUGE_PAGE, -(-capacity // HUGE_PAGE) * HUGE_PAGE)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        self._map = mmap.mmap(-1, size + HUGE_PAGE, flags=flags)   # one spare huge page to align the start
        whole = np.frombuffer(self._map, np.uint8)
        start = (-whole.ctypes.data) % HUGE_PAGE
        self._bytes = whole[start:start + size]
        self.huge_pages = _madvise_hugepage(self._bytes.ctypes.data, size)
        self.used = 0

    @property
    def capacity(self) -> int:
        return self._bytes.size

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised array from the arena, or from numpy when the arena is full."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        start = -(-self.used // ALIGN) * ALIGN
        if start + n > self.capacity:
            return np.empty(shape, dtype)
        self.used = start + n
        return self._bytes[start:start + n].view(dtype).reshape(shape)


def _madvise_hugepage(address: int, size: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(size), _MADV_HUGEPAGE) == 0
    except (OSError, AttributeError):
        return False
