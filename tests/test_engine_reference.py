"""The engine against transformers on tiny random Llamas (transformers is the reference, dev-only)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tinyqmoe  # noqa: E402
from tinymodels import save_tiny_hf_llama  # noqa: E402

IDS = [5, 17, 200, 3, 99, 42, 7, 250, 11, 64, 128, 1, 77, 150, 33, 290, 8, 8, 8, 19] * 3


def hf_logits(directory, ids):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy(), model


@pytest.fixture(scope="module", params=[
    dict(tie=False, rope_scaling=True),
    dict(tie=True, rope_scaling=False),
    dict(tie=False, rope_scaling=True, dtype="bfloat16"),
], ids=["untied-llama3rope", "tied-plainrope", "bf16"])
def tiny_dir(request, tmp_path_factory):
    return save_tiny_hf_llama(tmp_path_factory.mktemp("tiny"), **request.param)


def test_f32_logits_match_transformers(tiny_dir):
    ref, _ = hf_logits(tiny_dir, IDS)
    ours = tinyqmoe.load(str(tiny_dir), weights="f32").logits(IDS)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)


def test_f32_greedy_32_tokens_identical(tiny_dir):
    _, hf = hf_logits(tiny_dir, IDS[:5])
    with torch.no_grad():
        out = hf.generate(torch.tensor([IDS[:5]]), max_new_tokens=32, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, 5:].tolist()
    model = tinyqmoe.load(str(tiny_dir), weights="f32")
    model.tokenizer.stop_ids = frozenset()  # compare raw greedy streams, no stop tokens
    ours = list(model.stream_ids(IDS[:5], max_new_tokens=32))
    assert ours == out


def test_decode_step_by_step_equals_full_forward(tiny_dir):
    """Incremental decode through the KV cache gives the same logits as one causal pass."""
    model = tinyqmoe.load(str(tiny_dir), weights="f32")
    full = model.logits(IDS)
    state = model.new_state(len(IDS))
    from tinyqmoe.model.forward import forward

    step = np.concatenate([forward(model.weights, state, [t]) for t in IDS])
    np.testing.assert_allclose(step, full, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("group", [None, 32])
def test_int8_close_to_f32(tiny_dir, group):
    """int8 weights: top-1 agreement >= 90% and mean KL(f32 || int8) < 0.01 nats per position."""
    ref = tinyqmoe.load(str(tiny_dir), weights="f32").logits(IDS).astype(np.float64)
    q = tinyqmoe.load(str(tiny_dir), weights="int8", group=group).logits(IDS).astype(np.float64)
    agree = np.mean(ref.argmax(1) == q.argmax(1))
    lp = ref - np.log(np.exp(ref - ref.max(1, keepdims=True)).sum(1, keepdims=True)) - ref.max(1, keepdims=True)
    lq = q - np.log(np.exp(q - q.max(1, keepdims=True)).sum(1, keepdims=True)) - q.max(1, keepdims=True)
    kl = np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1))
    assert agree >= 0.9, agree
    assert kl < 0.01, kl


def test_loglikelihood_ids_matches_logits(tiny_dir):
    model = tinyqmoe.load(str(tiny_dir), weights="f32")
    ctx, conts = IDS[:10], [IDS[10:13], [4], IDS[13:20]]
    got = model.loglikelihood_ids(ctx, conts)
    for cont, (lp, greedy) in zip(conts, got):
        full = model.logits(ctx + cont).astype(np.float64)
        logp = full - np.log(np.exp(full).sum(1, keepdims=True))
        rows = np.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
        assert lp == pytest.approx(float(logp[rows, cont].sum()), abs=1e-3)
        assert greedy == bool(np.all(full[rows].argmax(1) == cont))


def test_chat_template_renders_like_transformers(tiny_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_dir)
    model = tinyqmoe.load(str(tiny_dir), weights="f32")
    msgs = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Capital of France?"}]
    for gen in (True, False):
        assert model.tokenizer.render_chat(msgs, gen) == hf.apply_chat_template(msgs, tokenize=False,
                                                                                 add_generation_prompt=gen)
    text = "Question: café 東京 12345\n  spaces"
    assert model.tokenizer.encode(text) == hf.encode(text, add_special_tokens=False)
