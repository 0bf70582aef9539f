"""docs/conventions.md through the Python API: sampling options, stop strings and stop reasons,
lists of prompts, the context manager."""
import inspect

import numpy as np
import pytest

import tinyqmoe
from tinyqmoe.errors import UsageError
from tinyqmoe.model.sampling import SamplingParams, sample

pytest.importorskip("transformers")
from tinymodels import save_tiny_hf_llama  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = save_tiny_hf_llama(tmp_path_factory.mktemp("conv-api"))
    with tinyqmoe.load(path, threads=1) as m:
        yield m


def greedy_text(model, n=24, **kw):
    return model.generate("The capital", max_new_tokens=n, ignore_eos=True, **kw)


# ---- sampling steps on known logits
def test_temperature_at_or_below_zero_is_greedy():
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    rng = np.random.default_rng(0)
    for t in (0.0, -1.0):
        assert all(sample(logits, SamplingParams(temperature=t), rng) == 1 for _ in range(20))


def test_min_p_keeps_only_tokens_near_the_top():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(1)
    picks = {sample(logits, SamplingParams(temperature=1.0, min_p=0.5), rng) for _ in range(300)}
    assert picks == {0, 1}  # 0.3 >= 0.5 * 0.5; 0.15 and 0.05 are below
    picks = {sample(logits, SamplingParams(temperature=1.0), rng) for _ in range(2000)}
    assert picks == {0, 1, 2, 3}  # min_p 0 = off


def test_top_p_zero_keeps_the_top_token_and_top_k_one_too():
    logits = np.array([1.0, 1.5, 0.2], np.float32)
    rng = np.random.default_rng(2)
    assert {sample(logits, SamplingParams(temperature=2.0, top_p=0.0), rng) for _ in range(50)} == {1}
    assert {sample(logits, SamplingParams(temperature=2.0, top_k=1), rng) for _ in range(50)} == {1}


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    logits = np.array([2.0, 1.8, -0.5, -0.6], np.float32)
    rng = np.random.default_rng(0)
    p = SamplingParams(repeat_penalty=1.5)
    assert sample(logits, p, rng, recent=np.array([0])) == 1            # 2.0 / 1.5 < 1.8
    assert sample(np.array([-0.5, -0.6], np.float32), p, rng, recent=np.array([0])) == 1  # -0.75 < -0.6
    assert sample(logits, SamplingParams(), rng, recent=np.array([0])) == 0   # 1 = off


def test_banned_tokens_are_never_chosen():
    logits = np.array([5.0, 1.0, 0.0], np.float32)
    assert sample(logits, SamplingParams(), np.random.default_rng(0), banned=(0,)) == 1


@pytest.mark.parametrize("field, value", [
    ("temperature", float("nan")), ("top_k", -1), ("top_p", 1.5), ("top_p", -0.1), ("min_p", 2.0),
    ("repeat_penalty", 0.0), ("repeat_penalty", float("inf")), ("repeat_last_n", -2), ("seed", -2),
])
def test_out_of_range_sampling_values_are_errors(model, field, value):
    with pytest.raises(UsageError, match=field):
        model.generate("x", max_new_tokens=2, **{field: value})


# ---- generation
def test_seed_minus_one_or_none_draws_a_seed_that_reproduces(model):
    model.generate("The capital", max_new_tokens=8, temperature=1.0, seed=-1)
    drawn = model.last_stats.seed
    assert isinstance(drawn, int) and drawn >= 0
    first = model.generate("The capital", max_new_tokens=8, temperature=1.0, seed=drawn)
    again = model.generate("The capital", max_new_tokens=8, temperature=1.0, seed=drawn)
    assert first == again
    model.generate("The capital", max_new_tokens=8, temperature=1.0)
    assert model.last_stats.seed != drawn  # None: a fresh one


def test_stop_string_cuts_before_it_and_says_so(model):
    full = greedy_text(model)
    stop = full[6:9]
    cut = full[: full.find(stop)]
    assert greedy_text(model, stop=stop) == cut
    s = model.last_stats
    assert s.stop_reason == "stop" and s.stop_string == stop and s.finish_reason == "stop"
    assert s.describe_stop().startswith("[stopped: stop string")
    assert greedy_text(model, stop=[stop, "never appears"]) == cut


def test_streamed_pieces_never_hold_part_of_a_stop_string(model):
    full = greedy_text(model)
    stop = full[6:9]
    pieces = list(model.stream("The capital", max_new_tokens=24, ignore_eos=True, stop=stop))
    assert "".join(pieces) == full[: full.find(stop)]  # the stop's first characters were held, then cut


def test_length_and_context_stops(model):
    greedy_text(model, n=5)
    assert model.last_stats.stop_reason == "length" and model.last_stats.generated == 5
    assert model.last_stats.describe_stop() == "[stopped: -n 5 reached]"
    n_prompt = len(model.tokenizer.encode("The capital"))
    model.generate("The capital", max_new_tokens=-1, ignore_eos=True)
    s = model.last_stats
    assert s.stop_reason == "context" and s.finish_reason == "length"
    assert n_prompt + s.generated == model.max_context
    assert s.describe_stop() == f"[stopped: context full at {model.max_context} tokens]"


def test_prompt_longer_than_the_context_is_an_error_with_the_numbers(model):
    with pytest.raises(UsageError, match=rf"does not fit the context of {model.max_context}"):
        model.generate("The capital " * 200, max_new_tokens=1)


def test_max_new_tokens_zero_and_below_minus_one(model):
    assert model.generate("The capital", max_new_tokens=0) == ""
    with pytest.raises(UsageError, match="max_new_tokens"):
        model.generate("The capital", max_new_tokens=-2)


def test_ignore_eos_never_samples_a_stop_token(model):
    stop_ids = model.tokenizer.stop_ids
    ids = list(model.stream_ids(model.tokenizer.encode("The"), max_new_tokens=60, temperature=3.0, seed=5,
                                ignore_eos=True))
    assert len(ids) == 60 and not set(ids) & stop_ids


def test_generate_on_a_list_equals_each_alone(model):
    prompts = ["The capital", "Llamas live"]
    alone = [model.generate(p, max_new_tokens=6, temperature=0.9, seed=3) for p in prompts]
    assert model.generate(prompts, max_new_tokens=6, temperature=0.9, seed=3) == alone
    assert len(model.last_stats_list) == 2
    with pytest.raises(UsageError, match="string"):
        model.generate(["ok", 3])


def test_empty_stop_string_is_an_error(model):
    with pytest.raises(UsageError, match="empty"):
        model.generate("x", stop="")


def test_chat_session_stop_keeps_the_cut_reply(model):
    session = model.chat_session()
    full = "".join(session.send("hello", max_new_tokens=12, ignore_eos=True))
    stop = full[3:6]
    session = model.chat_session()
    cut = "".join(session.send("hello", max_new_tokens=12, ignore_eos=True, stop=stop))
    assert cut == full[: full.find(stop)]
    assert session.messages[-1] == {"role": "assistant", "content": cut}
    assert model.last_stats.stop_reason == "stop"
    "".join(session.send("again", max_new_tokens=3))  # the next turn continues from the cut reply
    assert len(session.messages) == 4


def test_load_has_a_real_signature_and_model_a_repr_and_context_manager(model, tmp_path):
    params = inspect.signature(tinyqmoe.load).parameters
    assert "max_memory" in params and "context" in params
    assert "tinyqmoe.Model" in repr(model) and "int8" in repr(model)
    closed = []
    with tinyqmoe.load(model_path(model), threads=1) as m:
        m.close = lambda: closed.append(True)
    assert closed == [True]


def model_path(model):
    return model.name


def test_context_zero_is_the_models_own_and_more_is_an_error(model):
    own = model.config.max_seq_len
    with tinyqmoe.load(model.name, threads=1, context=0) as m:
        assert m.max_context == own
    with tinyqmoe.load(model.name, threads=1, context=16) as m:
        assert m.max_context == 16
    with pytest.raises(UsageError, match=f"1..{own}"):
        tinyqmoe.load(model.name, threads=1, context=own + 1)
