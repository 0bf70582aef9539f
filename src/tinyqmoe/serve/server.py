"""Running the app under uvicorn: in the foreground (the CLI) or on a background thread (tests)."""
from __future__ import annotations

import signal
import socket
import threading
import time

import uvicorn

GRACE_SECONDS = 10   # after SIGINT/SIGTERM, requests in flight get this long to finish, then are cancelled


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: a free one); a clean error if the address is taken or invalid."""
    from tinyqmoe.errors import UsageError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run(app, host: str, port: int, log_level: str = "info") -> None:
    """Serve until SIGINT or SIGTERM: stop accepting, let requests finish (then cancel them), return."""
    sock = listen(host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=GRACE_SECONDS)
    caught = []
    # uvicorn re-raises the signal that stopped it once it has shut down; record it instead, so the
    # process exits normally after a clean shutdown
    previous = {s: signal.signal(s, lambda sig, frame: caught.append(sig)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class BackgroundServer:
    """`with BackgroundServer(app) as s:` serves on 127.0.0.1 at a free port `s.port` from a thread."""

    def __init__(self, app, host: str = "127.0.0.1", start_timeout: float = 60.0):
        self.app = app
        self.sock = listen(host, 0)
        self.host, self.port = self.sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=GRACE_SECONDS))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.start_timeout = start_timeout

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(GRACE_SECONDS + 30)
