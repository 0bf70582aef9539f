"""The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) end to end."""
import numpy as np
import pytest

import tinyqmoe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_model(default_gguf):
    return tinyqmoe.load(default_gguf, weights="int8")


@pytest.fixture(scope="module")
def f32_model(default_gguf):
    return tinyqmoe.load(default_gguf, weights="f32")


def test_capital_of_france_greedy(int8_model, f32_model):
    for model in (int8_model, f32_model):
        text = model.generate("The capital of France is", max_new_tokens=8)
        assert "Paris" in text, (model.weights_kind, text)


def test_f32_matches_transformers_on_the_gguf(f32_model, default_gguf):
    """transformers dequantizes the same GGUF to fp32: logits must agree to float32 accuracy."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        default_gguf.parent, gguf_file=default_gguf.name, dtype=torch.float32).eval()
    ids = f32_model.tokenizer.encode("The capital of France is Paris. Llamas live in the Andes.")
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    ours = f32_model.logits(ids)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-3)
    assert (ours.argmax(1) == ref.argmax(1)).all()


def test_int8_agrees_with_f32(int8_model, f32_model):
    ids = int8_model.tokenizer.encode("Question: Which gas do plants absorb from the air?\nAnswer: carbon dioxide")
    a, b = f32_model.logits(ids).astype(np.float64), int8_model.logits(ids).astype(np.float64)
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.85


def test_chat_reply_stops_at_end_of_turn(int8_model):
    session = int8_model.chat_session()
    reply = "".join(session.send("What is the capital of France?", max_new_tokens=48))
    assert "Paris" in reply
    assert "<|im_end|>" not in reply and "<|im_start|>" not in reply
    # the second turn reuses the first turn's KV cache: only the new turn is prefilled
    first_len = len(session.cached)
    "".join(session.send("And of Italy?", max_new_tokens=24))
    assert int8_model.last_stats.prompt_tokens < first_len


def test_int8_cache_is_bit_identical(default_gguf, tmp_path, monkeypatch):
    """The cached raw-int8 container gives exactly the weights of quantizing in memory."""
    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path))
    direct = tinyqmoe.load(default_gguf, weights="int8", cache=False)
    first = tinyqmoe.load(default_gguf, weights="int8")   # writes the cache
    assert len(list((tmp_path / "int8").glob("*.tqm"))) == 1
    again = tinyqmoe.load(default_gguf, weights="int8")   # maps it
    ids = direct.tokenizer.encode("Hello world, this is a test.")
    ref = direct.logits(ids)
    for m in (first, again):
        assert np.array_equal(m.logits(ids), ref)
        assert np.array_equal(m.weights.layers[3].w_down.q, direct.weights.layers[3].w_down.q)


@pytest.fixture(scope="module")
def smol_lzw(default_gguf, tmp_path_factory):
    """The default model quantized to int8 and LZW-compressed (the paper's pipeline)."""
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint

    tqm = tmp_path_factory.mktemp("smol") / "smol-lzw.tqm"
    with open_checkpoint(default_gguf) as ck:
        write_container(ck, tqm, CompressOptions(codec="lzw", stats=False), progress=False)
    return tqm


def test_container_generation_equals_in_memory_int8(default_gguf, smol_lzw):
    """Generating from the compressed container is token-identical to in-memory int8."""
    in_memory = tinyqmoe.load(default_gguf, weights="int8", cache=False)
    prompt = "Llamas are"
    expect = list(in_memory.stream_ids(in_memory.tokenizer.encode(prompt), max_new_tokens=32))
    for source in ("resident", "fused", "streamed"):
        m = tinyqmoe.load(smol_lzw, source=source)
        assert list(m.stream_ids(m.tokenizer.encode(prompt), max_new_tokens=32)) == expect, source
        m.close()


def run_generate(tqm, budget):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tinyqmoe", "generate", str(tqm), "--max-memory", budget,
                           "--context", "128", "-p", "The capital of France is", "-n", "8"],
                          capture_output=True, text=True, timeout=600)


def test_generate_under_a_budget_stays_under_it(smol_lzw):
    """Ask for an impossible budget to learn what each source needs, then give just that (+12 MB):
    the run picks the source and its own peak RSS (VmHWM, printed on stderr) stays within --max-memory."""
    import re

    r = run_generate(smol_lzw, "1MB")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    fused, resident = re.search(r"\(fused, context 128\) needs about (\d+) MB .*resident (\d+) MB", r.stderr).groups()
    for source, need in (("fused", int(fused)), ("resident", int(resident))):
        budget = f"{need + 12}MB"
        r = run_generate(smol_lzw, budget)
        assert r.returncode == 0, r.stderr
        assert "Paris" in r.stdout
        chosen, peak_mb = re.search(r"tqm (\w+), .*peak RSS (\d+) MB", r.stderr).groups()  # decimal MB
        assert chosen == source, (budget, r.stderr)
        assert int(peak_mb) <= need + 12, (budget, r.stderr)


def test_first_run_of_a_float_checkpoint_stays_under_its_budget(default_gguf, tmp_path):
    """Issue 12: with an empty int8 cache, `generate default --max-memory 300MB` built the cache, peaked at
    402 MB and then refused the run. Building the cache now streams, and the budget's base is what the
    process holds after it (never below its peak so far), so the first run fits and stays under; since
    issue 15 (LLVM's pages dropped, kernels loaded before the weights; the smallest budget 167-183 MB)
    under 220 MB."""
    import os
    import re
    import subprocess
    import sys

    from tinyqmoe.assets import cache_dir

    (tmp_path / "assets").symlink_to(cache_dir() / "assets")   # the pinned model, not its int8 cache
    env = dict(os.environ, TINYQMOE_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "tinyqmoe", "generate", "default", "--max-memory", "220MB",
                        "--context", "128", "-p", "The capital of France is", "-n", "8"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout and list((tmp_path / "int8").glob("*.tqm"))   # this run built the cache
    peak = int(re.search(r"peak RSS (\d+) MB", r.stderr).group(1))
    assert peak <= 220, r.stderr
