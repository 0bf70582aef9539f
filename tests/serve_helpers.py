"""Shared by the server tests: a tiny model as a .tqm, a served app on a free loopback port, raw HTTP."""
from __future__ import annotations

import contextlib
import http.client
import json
import time
from pathlib import Path

import tinyqmoe


def write_tiny_tqm(directory: Path, context: int = 4096) -> Path:
    """The tiny random Llama of tinymodels as a raw .tqm, allowed `context` positions (long enough for
    a generation that outlasts the steps of a test)."""
    from tinymodels import save_tiny_hf_llama
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint

    hf = save_tiny_hf_llama(directory / "hf", tie=True)
    config = json.loads((hf / "config.json").read_text())
    config["max_position_embeddings"] = context
    (hf / "config.json").write_text(json.dumps(config))
    out = directory / "tiny.tqm"
    with open_checkpoint(hf) as ck:
        write_container(ck, out, CompressOptions(codec="raw"), progress=False)
    return out


def load_tiny(path: Path):
    """The tiny model with no stop tokens, so generations run to max_tokens (random weights)."""
    model = tinyqmoe.load(path, threads=2)
    model.tokenizer.stop_ids = frozenset()
    return model


@contextlib.contextmanager
def serving(model, **app_options):
    """(base url, openai client) of the model served from a background thread on 127.0.0.1."""
    import openai

    from tinyqmoe.serve.app import create_app
    from tinyqmoe.serve.server import BackgroundServer

    with BackgroundServer(create_app(model, **app_options)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=app_options.get("api_key") or "none",
                               max_retries=0, timeout=120)
        yield server, client


def post(server, path: str, body, headers=None, timeout: float = 120) -> tuple[int, dict]:
    """(status, JSON) of a raw POST; `body` bytes are sent as they are."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def get(server, path: str, timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def wait_until(predicate, timeout: float = 60.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()
