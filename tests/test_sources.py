"""Weight sources over a .tqm container: identical tokens, budgets that hold, clean failures."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyqmoe
from tinyqmoe.errors import ChecksumWrong, MemoryBudgetError, UsageError
from tinymodels import save_tiny_hf_llama

pytest.importorskip("transformers")
PROMPT = [5, 17, 200, 3, 99, 42]


@pytest.fixture(scope="module")
def tiny_tqm(tmp_path_factory):
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint

    d = tmp_path_factory.mktemp("src")
    hf = save_tiny_hf_llama(d / "hf", tie=True)
    out = {}
    for label, codec, major in (("lzw", "lzw", 2), ("raw", "raw", 2), ("raw-v1", "raw", 1), ("lzw-v1", "lzw", 1)):
        with open_checkpoint(hf) as ck:   # -v1: format 1.1, CRC-32 chunk checksums (2.0: XXH64)
            write_container(ck, d / f"tiny-{label}.tqm", CompressOptions(codec=codec, chunk_size=2048,
                                                                         format_major=major), progress=False)
        out[label] = d / f"tiny-{label}.tqm"
    # 4-bit: uint4 linears with an int8 embedding / LM head (the default), symmetric int4, and uint4 all
    # through (the embedding and LM head too: the chunked linears' offsets in the streamed and fused sources)
    for label, codec, extra in (("raw4", "raw", {}), ("raw4s", "raw", {"symmetric": True}),
                                ("lzw4e4", "lzw", {"embed_bits": 4})):
        with open_checkpoint(hf) as ck:
            write_container(ck, d / f"tiny-{label}.tqm",
                            CompressOptions(codec=codec, bits=4, group=32, chunk_size=2048, **extra), progress=False)
        out[label] = d / f"tiny-{label}.tqm"
    return out


def test_resident_4bit_stays_packed(tiny_tqm):
    """A 4-bit container runs resident with its rows packed (half the bytes of int8), on the fused path:
    uint4 (offsets beside the scales) or int4, the int8 embedding / LM head beside them."""
    for label, has_offset in (("raw4", True), ("raw4s", False)):
        m = tinyqmoe.load(tiny_tqm[label], threads=1)
        lin = m.weights.layers[0].w_gate_up
        assert lin.p is not None and lin.q is None and lin.p.shape[1] * 2 == lin.shape[1]
        assert (lin.offset is not None) == has_offset and m.weights.lm_head.q is not None
        assert m.decode_path == "fused"
        m.close()


def greedy(path, **kw):
    m = tinyqmoe.load(path, threads=2, **kw)
    m.tokenizer.stop_ids = frozenset()
    try:
        return list(m.stream_ids(PROMPT, max_new_tokens=24)), m.logits(PROMPT + [7, 8, 9, 10, 11] * 4)
    finally:
        m.close()


@pytest.mark.parametrize("codec", ["lzw", "raw", "raw-v1", "raw4", "raw4s", "lzw4e4"])
def test_sources_give_identical_tokens_and_logits(tiny_tqm, codec):
    ref_tokens, ref_logits = greedy(tiny_tqm[codec], source="resident")
    for source in ("streamed", "fused"):
        tokens, logits = greedy(tiny_tqm[codec], source=source)
        assert tokens == ref_tokens, source
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_f16_kv_caches_through_every_source(tiny_tqm):
    """-ctk f16 -ctv f16: every source runs, greedy tokens agree, and the budget counts half the KV."""
    from tinyqmoe.compress.reader import open_container
    from tinyqmoe.weights.budget import estimate

    f16 = {"cache_type_k": "f16", "cache_type_v": "f16"}
    ref_tokens, ref_logits = greedy(tiny_tqm["raw"], source="resident", **f16)
    assert ref_tokens == greedy(tiny_tqm["raw"], source="resident")[0]
    for source in ("streamed", "fused"):
        tokens, logits = greedy(tiny_tqm["raw"], source=source, **f16)
        assert tokens == ref_tokens, source
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-3, atol=1e-3 * np.abs(ref_logits).max())
    with open_container(tiny_tqm["raw"]) as c:
        kv32 = estimate(c, "fused", 64, 1, so_far=(0, 0)).parts["kv cache"]
        kv16 = estimate(c, "fused", 64, 1, so_far=(0, 0), kv_bytes=(2, 2)).parts["kv cache"]
    assert kv32 == 2 * kv16 > 0


def test_cold_regime_same_tokens(tiny_tqm):
    assert greedy(tiny_tqm["lzw"], source="fused", cold=True)[0] == greedy(tiny_tqm["lzw"], source="resident")[0]


def test_impossible_budget_fails_fast_with_the_minimum(tiny_tqm):
    with pytest.raises(MemoryBudgetError, match=r"too small: the smallest run \(fused.*needs about \d+ MB"):
        tinyqmoe.load(tiny_tqm["lzw"], max_memory="50MB")
    with pytest.raises(UsageError, match="cannot read .lots. as a size"):
        tinyqmoe.load(tiny_tqm["lzw"], max_memory="lots")


@pytest.mark.parametrize("label", ["lzw", "lzw-v1"])
def test_corrupt_chunk_mid_generation_is_a_clean_error(tiny_tqm, tmp_path, label):
    from tinyqmoe.compress.reader import open_container

    bad = tmp_path / "bad.tqm"
    data = bytearray(tiny_tqm[label].read_bytes())
    with open_container(tiny_tqm[label]) as c:
        e = c.tensor("model.layers.1.mlp.down_proj.weight")
        off = int(e.chunks[0]["offset"]) + 3
    data[off] ^= 0x40
    bad.write_bytes(bytes(data))
    for source in ("streamed", "fused"):
        m = tinyqmoe.load(bad, source=source)  # loads: the chunk is only read when layer 1 runs
        with pytest.raises(ChecksumWrong, match="down_proj"):
            list(m.stream_ids(PROMPT, max_new_tokens=4))


def run_budget(path, budget):
    code = ("import sys, tinyqmoe\nfrom tinyqmoe.weights.budget import peak_rss_bytes\n"
            "m = tinyqmoe.load(sys.argv[1], max_memory=sys.argv[2], threads=2, context=64)\n"
            "m.tokenizer.stop_ids = frozenset()\n"
            "list(m.stream_ids([5, 17, 200, 3], max_new_tokens=16))\n"
            "print(m.source, peak_rss_bytes())\n")
    return subprocess.run([sys.executable, "-c", code, str(path), budget], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def test_budget_holds_in_a_subprocess(tiny_tqm):
    """Peak RSS (VmHWM) of a real process stays under the budget it was given: the smallest budget
    the estimate accepts (learned from the error an impossible budget gives) plus 10 MB."""
    import re

    r = run_budget(tiny_tqm["lzw"], "1MB")
    assert r.returncode != 0 and "MemoryBudgetError" in r.stderr
    need = int(re.search(r"needs about (\d+) MB", r.stderr).group(1))
    budget = (need + 10) * 10**6
    r = run_budget(tiny_tqm["lzw"], str(budget))
    assert r.returncode == 0, r.stderr
    source, rss = r.stdout.split()
    assert int(rss) <= budget, (source, rss, budget)


def test_first_budgeted_load_compiles_in_a_child_once(tiny_tqm, tmp_path, monkeypatch):
    """Under a budget, the kernels a source uses are compiled in a child process (LLVM's memory stays
    there), once per code version and container layout: a stamp file records it."""
    from tinyqmoe import warmup
    from tinyqmoe.compress.reader import Container

    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path))
    with Container(tiny_tqm["lzw"]) as c:
        assert warmup.kernels_in_child(c, "fused", 1) is True
        assert warmup.kernels_in_child(c, "fused", 1) is False          # stamped
        assert len(list((tmp_path / "kernels").glob("*.ok"))) == 1
    with Container(tiny_tqm["raw"]) as c:                               # another codec: another stamp
        assert warmup.kernels_in_child(c, "fused", 1) is True
    m = tinyqmoe.load(tiny_tqm["raw"], threads=1, max_memory="4GB", source="fused")
    m.close()
    assert len(list((tmp_path / "kernels").glob("*.ok"))) == 2        # the load found its stamp


def test_an_error_in_the_warm_up_child_comes_back_as_the_same_one_line_error(tmp_path):
    from tinyqmoe import warmup
    from tinyqmoe.errors import TinyQMoEError

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 8)   # a truncated GGUF header
    with pytest.raises(TinyQMoEError) as e:
        warmup.int8_cache_in_child(bad, None, False)
    assert type(e.value) is not TinyQMoEError and str(bad) in e.value.one_line()
    assert "\n" not in e.value.one_line()


def test_dropping_clean_library_pages_lowers_rss_and_changes_nothing(tiny_tqm):
    """The budget measures "now" after unmapping the clean pages of read-only library mappings
    (libllvmlite.so alone is 60-115 MB): RSS falls, and compiled code and numpy still run."""
    from tinyqmoe.weights.budget import drop_clean_library_pages, rss_bytes

    before_tokens = greedy(tiny_tqm["raw"], source="fused")[0]
    before = rss_bytes()
    dropped = drop_clean_library_pages()
    assert dropped > 10_000_000 and rss_bytes() < before
    assert greedy(tiny_tqm["raw"], source="fused")[0] == before_tokens   # LLVM, numba and numpy fault back in


def test_a_budget_bounds_the_rows_of_a_forward_call(tiny_tqm):
    """Under a budget a forward call holds at most `max_rows` rows (weights/budget.rows_within): a longer
    prompt runs in pieces, its logits (every row's, and the last one's) within float rounding of one call."""
    from tinyqmoe.weights.budget import MAX_ROWS, MIN_ROWS

    m = tinyqmoe.load(tiny_tqm["raw"], threads=2, max_memory="4GB", context=256)
    try:
        assert m.max_rows == MAX_ROWS                  # a roomy budget: the most rows worth a call
        ids = [(7 * i + 3) % m.config.vocab_size for i in range(100)]
        whole = m.logits(ids)
        state = m.new_state()
        last = m.forward_batch([state], [ids])[0]
        m.max_rows = MIN_ROWS                          # what the tightest budget leaves
        pieces = m.logits(ids)
        assert pieces.shape == whole.shape
        np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-4 * np.abs(whole).max())
        state2 = m.new_state()
        two = m.forward_batch([state2, m.new_state()], [ids, ids[:40]])
        np.testing.assert_allclose(two[0], last, rtol=0, atol=1e-4 * np.abs(last).max())
        assert state2.pos == len(ids) and two[1].shape == (1, m.config.vocab_size)
    finally:
        m.close()
    assert tinyqmoe.load(tiny_tqm["raw"], threads=1).max_rows is None   # no budget: any number of rows


def capture_options(source, **options):
    return options


def test_an_evaluation_under_a_budget_holds_two_sequences():
    """A scorer keeps a subject's few-shot prefix and forks each question from it: its budget holds the
    KV caches of two sequences."""
    from tinyqmoe.eval.spec import BUDGET_SEQUENCES, ModelSpec

    assert BUDGET_SEQUENCES == 2
    spec = ModelSpec("m", max_memory="300MB", factory=f"{__name__}:capture_options")
    assert spec.load() == {"max_memory": "300MB", "sequences": 2}
    assert "sequences" not in ModelSpec("m", factory=f"{__name__}:capture_options").load()
