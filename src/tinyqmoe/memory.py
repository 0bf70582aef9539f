"""What this process holds: resident set now and at its peak, and handing back memory it no longer uses.

Linux only (/proc/self, madvise, glibc's malloc_trim); elsewhere the readings fall back to getrusage and
the give-backs do nothing.
"""
from __future__ import annotations


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (VmHWM). Not ru_maxrss: Linux carries that over from
    the parent across fork + exec, so a small child of a big parent reports the parent's peak."""
    peak = _status_kb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """This process's resident set now (VmRSS)."""
    now = _status_kb("VmRSS")
    return peak_rss_bytes() if now is None else now


def drop_clean_library_pages() -> int:
    """Unmap the clean file pages of read-only library mappings (libllvmlite.so alone holds 60-115 MB after
    `import numba`, by how the page cache holds it); they are faulted in again when used. -> bytes dropped.

    Only mappings of a file that are not writable and hold no private (copy-on-write) pages, which
    smaps reports as `Anonymous: 0 kB`, are touched: MADV_DONTNEED on them changes no byte the process
    can read. It makes what a process holds "now" the same whatever the page cache held, so the budget
    measures the same in a fresh venv and an old one. Linux only; elsewhere a no-op."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
    except (OSError, AttributeError):
        return 0
    spans, cur = [], None
    for line in lines:
        parts = line.split()
        if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:     # a mapping's first line
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            cur = {"lo": lo, "hi": hi, "perms": parts[1], "path": parts[5] if len(parts) > 5 else ""}
            spans.append(cur)
        elif cur is not None and parts and parts[0] in ("Rss:", "Anonymous:"):
            cur[parts[0][:-1]] = int(parts[1]) * 1024
    dropped = 0
    for s in spans:
        path = s["path"]
        if (path.startswith("/") and not path.startswith(("/dev/", "/memfd:", "/SYSV")) and "w" not in s["perms"]
                and s.get("Anonymous", 1) == 0 and s.get("Rss", 0) > 0):
            if libc.madvise(s["lo"], s["hi"] - s["lo"], 4) == 0:   # MADV_DONTNEED
                dropped += s["Rss"]
    return dropped


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc `malloc_trim(0)`; a no-op elsewhere). Building
    a tokenizer from its JSON leaves the parser's freed memory in the heap: 58 MB with a 128K vocabulary."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):   # not glibc
        pass
