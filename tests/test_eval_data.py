"""Eval data: question counts of the pinned files, OLMES few-shot parsing, --limit sampling."""
import collections
import gzip
import json

import pytest

from tinyqmoe.eval import data
from tinyqmoe.eval.data import Doc, apply_limit, stratified_sample
from tinyqmoe.eval.tasks import TASKS


def test_arc_test_counts_after_dedup_by_id():
    easy, challenge = data.arc_docs("arc_easy", "test"), data.arc_docs("arc_challenge", "test")
    assert (len(easy), len(challenge)) == (2376, 1172)
    assert len({d.id for d in easy}) == 2376
    assert all(0 <= d.gold < len(d.choices) and 3 <= len(d.choices) <= 5 for d in easy + challenge)


def test_arc_validation_counts_and_gold_from_answer_key():
    val = data.arc_docs("arc_easy", "validation")
    assert (len(val), len(data.arc_docs("arc_challenge", "validation"))) == (570, 299)
    first = val[0]  # MCAS_2000_4_6: answerKey "A"
    assert first.id == "MCAS_2000_4_6" and first.gold == 0 and first.choices[0] == "cellular telephone"


def test_mmlu_counts():
    test = data.mmlu_docs("test")
    assert len(test) == 14042
    assert len({d.subject for d in test}) == 57
    dev = data.mmlu_fewshot()
    assert len(dev) == 57 and all(len(v) == 5 for v in dev.values())


def test_arc_fewshot_rebuilds_the_olmes_5shot_contexts_exactly():
    """Our 5-shot ARC prompt equals the context stored in the OLMES requests, for every question."""
    for name in ("arc_easy", "arc_challenge"):
        task = TASKS[name]
        docs = {d.id: d for d in task.docs("test")}
        pool = task.fewshot_pool()
        path = data.data_root() / "oe_eval_tasks" / name / "test_rc_5shot/requests.jsonl.gz"
        n = 0
        with gzip.open(path, "rt") as f:
            for line in f:
                r = json.loads(line)
                if r["doc_id"] >= 1_000_000:
                    continue
                doc = docs[r["doc"]["id"]]
                assert task.context(doc, task.shots_for(doc, pool, 5)) == r["request"]["context"]
                assert r["request"]["continuation"] in task.continuations(doc)
                n += 1
        assert n == {"arc_easy": 9501, "arc_challenge": 4687}[name]


def _docs(sizes):
    return [Doc(f"{s}/{i}", "q", ("a", "b"), 0, s) for s, n in sizes.items() for i in range(n)]


def test_limit_is_lm_evals_count_or_fraction():
    docs = _docs({"x": 10})
    assert apply_limit(docs, 3) == docs[:3]
    assert apply_limit(docs, None) == docs and apply_limit(docs, 50) == docs
    assert apply_limit(docs, 0.25) == docs[:3]   # ceil(10 * 0.25)
    assert apply_limit(docs, 1.0) == docs[:1]    # lm-eval: 1.0 is not below 1, so a count
    from tinyqmoe.errors import UsageError
    with pytest.raises(UsageError):
        apply_limit(docs, 0)


def test_sample_is_proportional_deterministic_and_in_data_order():
    docs = _docs({"a": 100, "b": 50, "c": 30, "d": 20})
    s = stratified_sample(docs, 20)
    assert len(s) == 20
    assert collections.Counter(d.subject for d in s) == {"a": 10, "b": 5, "c": 3, "d": 2}
    assert s == stratified_sample(docs, 20)
    assert s != stratified_sample(docs, 20, seed=7)
    pos = [docs.index(d) for d in s]
    assert pos == sorted(pos)


def test_sample_largest_remainder():
    docs = _docs({"a": 5, "b": 3, "c": 2})  # quotas for 5: 2.5, 1.5, 1.0 -> 3 (tie on .5 by name), 1, 1
    s = stratified_sample(docs, 5)
    assert collections.Counter(d.subject for d in s) == {"a": 3, "b": 1, "c": 1}


def test_sample_rejects_nonpositive():
    from tinyqmoe.errors import UsageError
    with pytest.raises(UsageError):
        stratified_sample(_docs({"a": 3}), 0)
