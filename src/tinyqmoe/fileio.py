"""Writing files a user asked for: whole or not at all, only over regular files, nothing left behind.

Rules every writer follows (compress -o, eval outputs, hw.json, the int8 cache):
  - `check_output(path)` runs before any work: an empty name, an existing directory, a device, FIFO or
    socket (`/dev/null`, `/dev/full`), a missing or unwritable directory are refused up front.
  - A symlink is followed: the file it points to is replaced and the link stays.
  - Bytes go to a temporary file beside the target, named `.<name>.<pid>.<random>.tmp`, fsynced, then
    renamed over the target. An exception (Ctrl-C, SIGTERM) removes it; after SIGKILL the next write to
    the same target removes temporaries whose process is gone (`remove_stale_temps`), never a live one's.
  - The result keeps an existing target's permission bits, and a new file gets 0666 minus the umask.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from pathlib import Path

from tinyqmoe.errors import UsageError

_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
_LEGACY_TEMP = re.compile(r"\.[a-z0-9_]{8}(\.tmp)?")
LEGACY_TEMP_AGE = 24 * 3600   # seconds


def check_output(path: str | Path, what: str = "output") -> Path:
    """The path to write (symlinks resolved), or a one-line UsageError before any work starts."""
    if str(path).strip() == "":
        raise UsageError(f"the {what} path is empty")
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() or path.is_symlink():
        st = os.stat(path) if path.exists() else None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UsageError(f"the {what} is an existing directory; give a file name", path)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise UsageError(f"the {what} exists and is not a regular file ({_kind(st)}); tinyqmoe writes only "
                             f"regular files", path)
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"the {what} directory {str(parent)!r} does not exist", path)
    probe = temp_path(path)
    try:   # the real test of writability (os.access says yes to root on a read-only mount)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"cannot write in directory {str(parent)!r}: {exc.strerror}", path) from None
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path, what: str = "output"):
    """`with atomic_output(p) as f:` write to f (binary); the file appears at p only if the block completes."""
    path = check_output(path, what)
    remove_stale_temps(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside `path` that `remove_stale_temps` recognises once its process is gone."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it: never a half-written file."""
    path = Path(path)
    if str(path).strip() and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove `.<name>.<pid>.*.tmp` beside `path` whose process no longer exists. Returns what it removed."""
    path = Path(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        m = _TEMP.fullmatch(e.name)
        stale = m and m["name"] == path.name and not pid_alive(int(m["pid"]))
        if not stale and e.name.startswith(f".{path.name}.") and _LEGACY_TEMP.fullmatch(e.name[len(path.name) + 1:]):
            with contextlib.suppress(OSError):   # mkstemp names of older versions carry no PID: go by age
                stale = now - e.stat().st_mtime > LEGACY_TEMP_AGE
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(e.path)
                removed.append(Path(e.path))
    return removed


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:      # another user's live process
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)   # overwriting keeps the target's permission bits
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _kind(st) -> str:
    if st is None:
        return "a dangling symlink"
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(st.st_mode):
            return name
    return "not a regular file"
