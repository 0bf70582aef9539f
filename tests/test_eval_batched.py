"""Batched scoring with prefix forking: the same log-likelihoods as Model.loglikelihood_ids on a tiny
real model (f32), independent of how questions are batched."""
import numpy as np
import pytest

pytest.importorskip("torch")

import tinyqmoe  # noqa: E402
from tinymodels import save_tiny_hf_llama  # noqa: E402
from tinyqmoe.eval.batched import PATH, BatchScorer, Request, common_prefix  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = save_tiny_hf_llama(tmp_path_factory.mktemp("eval-tiny"), seed=5)
    return tinyqmoe.load(str(path), weights="f32", cache=False)


def _requests(model, n_questions=6, seed=0):
    """A shared 5-shot-like prefix of 60 ids, then per question 20-40 ids and four continuations:
    single-token ones (MMLU letters) for even questions, 1-3 token ones (ARC answers) for odd ones."""
    rng = np.random.default_rng(seed)
    V = model.config.vocab_size
    shared = [int(x) for x in rng.integers(3, V, 60)]
    reqs = []
    for q in range(n_questions):
        ctx = shared + [int(x) for x in rng.integers(3, V, int(rng.integers(20, 40)))]
        lens = [1, 1, 1, 1] if q % 2 == 0 else [1, 2, 3, 2]
        conts = [[int(x) for x in rng.integers(3, V, n)] for n in lens]
        reqs.append(Request(ctx, conts, shared))
    reqs.append(Request(shared[:30] + [7, 8, 9], [[5], [6, 7]], shared))  # shares only part of it
    return reqs


def test_batched_loglikelihoods_equal_the_one_question_scorer(model):
    reqs = _requests(model)
    want = [model.loglikelihood_ids(r.ctx, r.conts) for r in reqs]
    for path, max_rows in ((PATH, 1), ("stream", 64), ("blocked", 10_000)):  # one question per forward, a few, all
        got = dict(BatchScorer(model, path, max_rows=max_rows).score(reqs))
        assert sorted(got) == list(range(len(reqs)))
        for i, r in enumerate(reqs):
            lls = [ll for ll, _ in got[i].results]
            assert lls == pytest.approx([ll for ll, _ in want[i]], abs=1e-4)
            assert [g for _, g in got[i].results] == [g for _, g in want[i]]


def test_on_the_stream_path_a_question_does_not_depend_on_its_batch(model):
    reqs = _requests(model, seed=1)
    alone = [BatchScorer(model, "stream", max_rows=1).score_batch([r])[0].results for r in reqs]
    together = [s.results for s in BatchScorer(model, "stream", max_rows=10_000).score_batch(reqs)]
    assert together == alone  # bit for bit: per-row kernels whatever the batch holds


def test_default_scorer_is_one_question_per_forward_on_a_fixed_path(model):
    reqs = _requests(model, seed=3)
    scorer = BatchScorer(model)
    assert (scorer.path, scorer.max_rows) == (PATH, 1) and PATH in ("stream", "blocked")
    assert list(scorer.batches(reqs)) == [(i, i + 1) for i in range(len(reqs))]


def test_prefix_runs_once_and_prefill_counts_only_new_tokens(model):
    reqs = _requests(model, n_questions=4, seed=2)[:4]
    scored = dict(BatchScorer(model, max_rows=1).score(reqs))
    n_shared = [min(common_prefix(r.shared, r.ctx), len(r.ctx) - 1) for r in reqs]
    assert n_shared == [60] * 4
    extra = [sum(len(c) - 1 for c in r.conts) for r in reqs]
    assert scored[0].prefill_tokens == len(reqs[0].ctx) + extra[0]              # computed the prefix
    for i in (1, 2, 3):
        assert scored[i].prefill_tokens == len(reqs[i].ctx) - 60 + extra[i]    # forked it
