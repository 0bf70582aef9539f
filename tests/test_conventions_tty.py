"""On a terminal (a pseudo-terminal here): progress bars are drawn unless --no-progress, and chat
edits lines with readline and keeps a history."""
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

pytest.importorskip("transformers")
from tinymodels import save_tiny_hf_llama  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny_hf_llama(tmp_path_factory.mktemp("conv-tty")))


class Terminal:
    """A command whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, args, env):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column window
        self.proc = subprocess.Popen([sys.executable, "-m", "tinyqmoe", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.text = b""

    def read_until(self, needle: bytes, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not seen in {self.text[-500:]!r}")
            if not self._read(0.5) and self.proc.poll() is not None:
                raise AssertionError(f"exited before {needle!r}: {self.text[-500:]!r}")

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.text += chunk
        return bool(chunk)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        while self._read(0.05):
            pass
        os.close(self.master)
        assert self.proc.wait(timeout=5) == 0, self.text[-800:]
        return self.text.decode("utf-8", "replace")


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, TINYQMOE_CACHE=str(tmp_path / "cache"), COLUMNS="100", TERM="xterm")


def test_progress_bars_on_a_terminal_and_not_with_no_progress(tiny, tmp_path, env):
    shown = Terminal(["compress", tiny, "-o", str(tmp_path / "a.tqm"), "--codec", "raw", "--no-stats"], env)
    assert "compress tensors" in shown.finish()
    hidden = Terminal(["compress", tiny, "-o", str(tmp_path / "b.tqm"), "--codec", "raw", "--no-stats",
                       "--no-progress"], env)
    assert "compress tensors" not in hidden.finish()
    quiet = Terminal(["compress", tiny, "-o", str(tmp_path / "c.tqm"), "--codec", "raw", "--no-stats", "-q"], env)
    text = quiet.finish()
    assert "compress tensors" not in text and "wrote" not in text


def test_chat_edits_lines_with_readline_and_keeps_history(tiny, env, tmp_path):
    term = Terminal(["chat", tiny, "-n", "2", "-t", "1", "--no-progress"], env)
    term.read_until(b"> ")
    term.write(b"helo\x1b[Dl\r")  # left arrow, then insert: "hello"
    term.read_until(b"generated")  # the reply's statistics line
    term.read_until(b"> ")
    term.write(b"/exit\r")
    text = term.finish()
    assert "^[[D" not in text
    history = (tmp_path / "cache" / "chat_history").read_text()
    assert "hello" in history.splitlines() and "helo" not in history.splitlines()
