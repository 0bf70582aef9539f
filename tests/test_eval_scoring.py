"""String-level scoring: lm-eval tokenization rules, BOS, truncation, acc / acc_norm."""
import hashlib
import types

import numpy as np
import pytest

from eval_fakes import FakeModel
from tinyqmoe.errors import UsageError
from tinyqmoe.eval import encode_request, loglikelihood
from tinyqmoe.eval.data import Doc
from tinyqmoe.eval.scoring import make_record, uses_bos
from tinyqmoe.eval.tasks import TASKS


@pytest.fixture(scope="module")
def model():
    return FakeModel(seed=3)


def test_trailing_whitespace_moves_to_the_continuation(model):
    tok = model.tokenizer
    ctx, conts, truncated = encode_request(model, "Answer: ", ["A", "B"])
    assert ctx == tok.encode("Answer:")
    assert conts == [[tok.tok.token_to_id("ĠA")], [tok.tok.token_to_id("ĠB")]]
    assert not truncated
    assert encode_request(model, "Answer:", [" A", " B"]) == (ctx, conts, False)


def test_continuation_is_the_whole_encoding_after_the_context_tokens(model):
    """lm-eval v0.4: encode(context + continuation)[len(encode(context)):], even across a merge."""
    tok = model.tokenizer
    ctx, (cont,), _ = encode_request(model, "Question: Th", ["e end"])
    whole = tok.encode("Question: The end")
    assert ctx == tok.encode("Question: Th")
    assert cont == whole[len(ctx):]
    assert cont != tok.encode("e end")  # "The" merged across the boundary


def test_bos_follows_the_tokenizer_convention_or_the_argument():
    plain, with_bos = FakeModel(add_bos=False), FakeModel(add_bos=True)
    assert encode_request(plain, "Question: x", [" y"])[0][0] != 0
    assert encode_request(with_bos, "Question: x", [" y"])[0][0] == 0
    assert encode_request(plain, "Question: x", [" y"], add_bos=True)[0][0] == 0
    assert encode_request(plain, "", ["y"])[0] == [0]  # empty context: BOS as prefix token
    engine_like = types.SimpleNamespace(tokenizer=types.SimpleNamespace(spec=types.SimpleNamespace(add_bos=True)))
    assert uses_bos(engine_like)


def test_long_context_is_cut_from_the_left_to_fit_the_window():
    m = FakeModel(max_seq_len=16)
    text = "Question: " + "the " * 40 + "\nAnswer:"
    full = m.tokenizer.encode(text)
    ctx, conts, truncated = encode_request(m, text, [" A", " the the the"])
    assert truncated and ctx == full[-(16 + 1 - max(map(len, conts))):]
    assert len(ctx) + max(map(len, conts)) - 1 == 16
    with pytest.raises(UsageError):
        encode_request(FakeModel(max_seq_len=2), text, [" the the the the"])


def test_loglikelihood_equals_the_log_softmax_sum_from_logits(model):
    tok = model.tokenizer
    context, conts = "Question: Which one?\nAnswer:", [" yes", " no way"]
    got = loglikelihood(model, context, conts)
    c = tok.encode(context)
    for (ll, greedy), cont in zip(got, conts):
        k = tok.encode(cont)
        lg = model.logits(c + k).astype(np.float64)
        lp = lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))
        want = sum(lp[len(c) - 1 + j, k[j]] for j in range(len(k)))
        assert ll == pytest.approx(want, abs=1e-9)
        assert greedy == all(lg[len(c) - 1 + j].argmax() == k[j] for j in range(len(k)))


def _record(task, doc, lls):
    from tinyqmoe.eval.batched import Request, Scored
    req = Request([1, 2], [[3]] * len(lls))
    return make_record(task, doc, 7, req, "ctx", [" x"] * len(lls),
                       Scored([(x, False) for x in lls], 2, 0.5), False)


def test_acc_uses_loglik_and_acc_norm_divides_by_choice_characters():
    doc = Doc("d", "pick", ("a", "bbbbbbbbbb"), 1)
    rec = _record(TASKS["arc_easy"], doc, [-3.0, -5.0])
    x = rec["tinyqmoe"]
    assert (x["pred"], x["pred_norm"], rec["acc"], rec["acc_norm"]) == (0, 1, 0.0, 1.0)
    assert x["loglik"] == [-3.0, -5.0] and rec["target"] == "1" and x["seconds"] == 0.5
    # ties go to the first choice, as np.argmax in lm-eval
    rec = _record(TASKS["mmlu"], Doc("s/0", "q", ("w", "x", "y", "z"), 2, "s"), [-2.0, -2.0, -1.0, -1.0])
    assert rec["tinyqmoe"]["pred"] == 2 and rec["acc"] == 1.0 and "acc_norm" not in rec


def test_record_is_an_lm_eval_log_samples_line():
    rec = _record(TASKS["arc_easy"], Doc("d", "pick", ("a", "b"), 0), [-1.5, -2.25])
    assert rec["doc_id"] == 7 and isinstance(rec["doc_id"], int)
    assert rec["arguments"] == {"gen_args_0": {"arg_0": "ctx", "arg_1": " x"},
                                "gen_args_1": {"arg_0": "ctx", "arg_1": " x"}}
    assert rec["resps"] == [[["-1.5", "False"]], [["-2.25", "False"]]]
    assert rec["filtered_resps"] == [["-1.5", "False"], ["-2.25", "False"]] and rec["filter"] == "none"
    assert rec["metrics"] == ["acc", "acc_norm"]
    assert rec["prompt_hash"] == hashlib.sha256(b"ctx").hexdigest()
    assert rec["target_hash"] == hashlib.sha256(b"0").hexdigest()
