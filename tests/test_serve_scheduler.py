"""The serving scheduler without HTTP: how prompts are split between the prompt path and the fused
decode call, and that a sequence's greedy tokens never depend on what runs beside it."""
import threading

import numpy as np
import pytest

from serve_helpers import load_tiny, write_tiny_tqm
from tinyqmoe.kernels.matvec import SMALL_BATCH
from tinyqmoe.model.sampling import SamplingParams
from tinyqmoe.serve.scheduler import PREFILL_CHUNK, Job, Scheduler

# a tail alone (<= SMALL_BATCH), one long chunk, a long chunk and a tail, two long chunks and a tail
LENGTHS = (5, SMALL_BATCH, SMALL_BATCH + 1, PREFILL_CHUNK, PREFILL_CHUNK + 9, 2 * PREFILL_CHUNK + 20)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = load_tiny(write_tiny_tqm(tmp_path_factory.mktemp("sched")))
    assert m.decode_path == "fused"
    yield m
    m.close()


def run(model, prompts, parallel, max_new=8, calls=None, fused_prompts=None):
    """max_new greedy tokens for each prompt, all submitted at once -> (each prompt's text, its last
    event); `calls`, if given, collects the rows and the path of every forward_batch call;
    `fused_prompts` overrides the model's choice (Model.fused_prompt_chunks), so both run on any host."""
    sched = Scheduler(model, parallel=parallel, keep_caches=0)
    if fused_prompts is not None:
        sched.fused_prompts = fused_prompts   # before any job: the worker reads it at each step
    if calls is not None:
        forward = model.forward_batch

        def counted(states, tokens, all_logits=False, path="auto"):
            calls.append((sum(len(t) for t in tokens), path))
            return forward(states, tokens, all_logits, path)
        model.forward_batch = counted
    texts = [""] * len(prompts)
    last = [None] * len(prompts)
    done = [threading.Event() for _ in prompts]
    try:
        for i, p in enumerate(prompts):
            def sink(event, i=i):   # on the worker thread: record only, the test asserts
                if event[0] == "text":
                    texts[i] += event[1]
                else:
                    last[i] = event
                    done[i].set()
            sched.submit(Job(list(p), max_new, SamplingParams(temperature=0), sink, ignore_eos=True))
        for d in done:
            assert d.wait(60)
    finally:
        if calls is not None:
            del model.forward_batch   # the instance attribute: the method shows through again
        sched.close()
    for event in last:
        assert event[0] == "done" and event[2]["completion_tokens"] == max_new, event
    return texts, last


@pytest.mark.parametrize("fused_prompts", [False, True])
def test_long_chunks_run_alone_or_join_the_fused_call(model, fused_prompts):
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(1, 300, 2 * PREFILL_CHUNK + 9)]
    calls = []
    run(model, [prompt], parallel=1, calls=calls, fused_prompts=fused_prompts)
    # two whole chunks alone through the prompt path (or, where the fused call multiplies int16 tokens, in
    # it), then the 9-token tail in the fused call, then decoding
    whole = "stream" if fused_prompts else "auto"
    assert calls[:3] == [(PREFILL_CHUNK, whole), (PREFILL_CHUNK, whole), (9, "stream")]
    assert all(c == (1, "stream") for c in calls[3:])


def test_the_model_says_where_prompt_chunks_run(model):
    from tinyqmoe.kernels.rowdot_a16 import A16
    assert model.fused_prompt_chunks == A16   # the tiny model's rows have one scale each, 32-input multiples
    sched = Scheduler(model, parallel=1)
    try:
        assert sched.fused_prompts == A16
    finally:
        sched.close()


@pytest.mark.parametrize("fused_prompts", [False, True])
def test_greedy_text_is_the_same_alone_and_together(model, fused_prompts):
    rng = np.random.default_rng(1)
    prompts = [[int(t) for t in rng.integers(1, 300, n)] for n in LENGTHS]
    alone = [run(model, [p], parallel=1, max_new=12, fused_prompts=fused_prompts)[0][0] for p in prompts]
    together = run(model, prompts, parallel=len(prompts), max_new=12, fused_prompts=fused_prompts)[0]
    assert together == alone
    assert len(set(alone)) > 1   # the prompts lead somewhere different: a real comparison


def test_a_long_stream_sequence_equals_its_pieces(model):
    """path="stream" takes sequences longer than SMALL_BATCH in the fused call (what the scheduler's
    fused prompts use): their rows' logits bit for bit those of the same tokens fed in short pieces."""
    ids = [int(t) for t in np.random.default_rng(2).integers(1, 300, 40)]
    whole = model.forward_batch([model.new_state(64)], [ids], all_logits=True, path="stream")[0]
    state = model.new_state(64)
    parts = [model.forward_batch([state], [ids[i:i + 10]], all_logits=True, path="stream")[0] for i in range(0, 40, 10)]
    assert np.array_equal(whole, np.concatenate(parts))
