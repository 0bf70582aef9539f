"""The command line: verbs on a tiny model, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys

import pytest

from tinymodels import save_tiny_hf_llama

pytest.importorskip("transformers")


def run(*args, stdin=None, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "tinyqmoe", *args], input=stdin, capture_output=True,
                          text=True, env=e, timeout=300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny_hf_llama(tmp_path_factory.mktemp("cli-tiny")))


def test_generate_streams_completion_and_speeds(tiny):
    r = run("generate", tiny, "-p", "The capital", "-n", "5", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital")
    assert "tok/s" in r.stderr


def test_generate_is_deterministic_with_seed(tiny):
    a = run("generate", tiny, "-p", "Hello", "-n", "6", "--temperature", "0.8", "--seed", "3")
    b = run("generate", tiny, "-p", "Hello", "-n", "6", "--temperature", "0.8", "--seed", "3")
    assert a.returncode == 0 and a.stdout == b.stdout


def test_chat_reads_piped_turns(tiny):
    r = run("chat", tiny, "-n", "4", stdin="hello\n\n/reset\nsecond turn\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("> ") == 3  # three non-empty user lines echoed


def test_bench_json(tiny):
    r = run("bench", tiny, "--prompt-tokens", "16", "--gen-tokens", "4", "--repeats", "1", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["prompt_tokens"] == 16 and d["gen_tps"] > 0 and d["peak_rss_mb"] > 0


@pytest.mark.parametrize("args, needle", [
    (["generate", "/no/such/model", "-p", "x"], "/no/such/model"),
    (["generate", "{tiny}", "-p", "x", "--top-p", "1.5"], "--top-p"),
    (["generate", "{tiny}", "-p", "x", "--group", "7"], "group size 7"),
    (["generate", "{bad}", "-p", "x"], "config.json"),
    (["fetch", "nonsense"], "unknown asset"),
])
def test_bad_input_is_one_line_exit_2(tiny, tmp_path, args, needle):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    args = [a.format(tiny=tiny, bad=bad) for a in args]
    r = run(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_debug_shows_traceback():
    r = run("--debug", "generate", "/no/such/model", "-p", "x")
    assert r.returncode != 0 and "Traceback" in r.stderr
