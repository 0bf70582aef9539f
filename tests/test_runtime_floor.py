"""The runtime floor (issue 15, part 4): what a loaded model keeps besides its weights.

A tokenizer keeps no copy of its JSON and gives the parser's freed heap back, with the same ids; a
budgeted load starts LLVM and loads the kernels the warm-up child compiled before the weights, so a
run loads no kernel of its own.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from container_helpers import tiny_checkpoint
from tinyqmoe.compress.reader import open_container
from tinyqmoe.compress.writer import CompressOptions, write_container
from tinyqmoe.model.tokenizer import Tokenizer, container_tokenizer

TEXTS = ["the quick brown fox", "", "  jumps over\nthe lazy dog ", "caf\u00e9 \u6771\u4eac 3.14 \U0001F600", "foxfoxfox" * 50]


@pytest.fixture(scope="module")
def tqm(tmp_path_factory):
    path = tmp_path_factory.mktemp("floor") / "tiny.tqm"
    write_container(tiny_checkpoint(), path, CompressOptions(codec="lzw", chunk_size=2048), progress=False)
    return path


def test_container_tokenizer_gives_the_same_ids_and_lets_go_of_the_json(tqm):
    from tokenizers import Tokenizer as HFTokenizer

    with open_container(tqm) as c:
        reference = HFTokenizer.from_str(c.tokenizer.tokenizer_json)
        expect = [reference.encode(t, add_special_tokens=False).ids for t in TEXTS]
        text = reference.decode(expect[0])
        kept = Tokenizer(c.tokenizer, tqm)               # built from a spec the caller keeps
        tok = container_tokenizer(c, tqm)
        assert "tokenizer_json" not in c.header["tokenizer"] and c.tokenizer.tokenizer_json == ""
        assert c.tokenizer.bos_token == "<s>" and c.tokenizer.chat_template
    for t in (tok, kept):
        assert [t.encode(x, add_bos=False) for x in TEXTS] == expect
        assert t.spec.tokenizer_json == "" and t.spec.add_bos and t.bos_id is not None
        assert t.decode(expect[0]) == text
        assert t.render_chat([{"role": "user", "content": "hi"}]) == "hi"


def test_budgeted_load_brings_its_kernels_before_the_weights(tqm, tmp_path):
    """The child lists the kernels it compiled; the budgeted load loads them all (library pages dropped
    after each) before the weights, so generating loads no kernel, and the process's peak stays within
    the budget the estimate gave."""
    code = ("import sys, tinyqmoe\nfrom numba.core.dispatcher import Dispatcher\n"
            "from tinyqmoe.weights.budget import peak_rss_bytes\n"
            "m = tinyqmoe.load(sys.argv[1], max_memory=sys.argv[2], threads=2, context=64, source='fused')\n"
            "def count():\n"
            "    ds = {id(o): o for n, mod in list(sys.modules.items()) if n.startswith('tinyqmoe')\n"
            "          for o in vars(mod).values() if isinstance(o, Dispatcher)}\n"
            "    return sum(len(d.signatures) for d in ds.values())\n"
            "before = count()\n"
            "m.tokenizer.stop_ids = frozenset()\n"
            "list(m.stream_ids([5, 17, 200, 3], max_new_tokens=8))\n"
            "print(before, count(), peak_rss_bytes())\n")
    env = dict(os.environ, TINYQMOE_CACHE=str(tmp_path))     # an empty cache: the child runs first
    for _ in range(2):                                         # compiled in the child; then only loaded
        r = subprocess.run([sys.executable, "-c", code, str(tqm), "2GB"], capture_output=True, text=True,
                           timeout=600, env=env)
        assert r.returncode == 0, r.stderr
        before, after, _peak = map(int, r.stdout.split())
        assert before > 0 and after == before, r.stdout
    assert list((tmp_path / "kernels").glob("*.kernels"))
