"""The runtime floor (issue 15, part 4): what a loaded model keeps besides its weights.

A tokenizer keeps no copy of its JSON and gives the parser's freed heap back, with the same ids.
"""
from __future__ import annotations

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
