"""Comparisons: pairing by question, known differences, markdown; limit syntax; lm-eval's pooled stderr."""
import math

import numpy as np
import pytest

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.compare import compare_markdown, paired_table
from tinyqmoe.eval.report import extras, group_block, leaf_block, pooled_stderr
from tinyqmoe.eval.runner import parse_limit


def _variant(title, accs, bits):
    recs = [{"doc_id": i, "acc": float(a), "acc_norm": float(a),
             "tinyqmoe": {"seconds": 0.5, "n_ctx_tokens": 10, "prefill_tokens": 12, "truncated": False}}
            for i, a in enumerate(accs)]
    results = {"tinyqmoe": {"config": {"model": "m", "weights": title, "bits_per_weight": bits},
                            "tasks": {"arc_easy": extras(recs, ("acc", "acc_norm"))}},
               "results": {"arc_easy": leaf_block(recs, ("acc", "acc_norm"), "arc_easy", "arc_easy")}}
    return {"title": title, "results": results, "records": {"arc_easy": recs}}


def test_paired_differences_known_answer():
    base = _variant("Original", [1] * 30 + [0] * 10, 32.0)
    worse = _variant("4-bit", [0] * 10 + [1] * 20 + [0] * 10, 4.5)  # loses 10 questions, gains none
    table = paired_table([base, worse], ["arc_easy"])
    d = table["tasks"]["arc_easy"]["vs_first"][0]["acc"]
    assert d["diff"] == pytest.approx(-0.25)
    assert d["ci95"][1] < 0  # clearly below zero
    assert (d["mcnemar"]["b_only"], d["mcnemar"]["a_only"]) == (10, 0)
    assert d["mcnemar"]["p_value"] == pytest.approx(2 / 2 ** 10)
    md = compare_markdown(table)
    assert "| arc_easy | acc % | 40 | 75.0 [59.8, 85.8] | 50.0 [35.2, 64.8] |" in md
    assert "| arc_easy | acc | 4-bit | -25.0 [" in md and "| 10 | 0 |" in md
    assert "| – | bits/weight | – | 32.00 | 4.50 |" in md


def test_variants_must_score_the_same_questions():
    base = _variant("A", [1, 0, 1], 8.0)
    other = _variant("B", [1, 0], 8.0)
    with pytest.raises(UsageError):
        paired_table([base, other], ["arc_easy"])


def test_limit_syntax():
    assert parse_limit("50") == 50 and parse_limit(None) is None
    assert parse_limit("0.1") == 0.1 and isinstance(parse_limit("0.1"), float)
    lim = parse_limit("mmlu=0.05, arc_easy=300")
    assert lim == {"mmlu": 0.05, "arc_easy": 300}
    with pytest.raises(UsageError):
        parse_limit("mmlu=lots")
    with pytest.raises(UsageError):
        parse_limit("0.5", "--sample", fractions=False)


def test_group_stderr_is_pooled_over_its_tasks():
    """Pooled variance over tasks, as lm-eval's pooled_sample_stderr: for tasks with equal means it
    equals the stderr of all questions together (the flat one); in general it is smaller."""
    rng = np.random.default_rng(0)
    tasks = [rng.integers(0, 2, n).astype(float) for n in (5, 17, 40, 9)]
    blocks = [leaf_block([{"acc": x} for x in t], ("acc",), f"t{i}", f"t{i}") for i, t in enumerate(tasks)]
    g = group_block(blocks, ("acc",), "g", "g")
    flat = np.concatenate(tasks)
    assert g["acc,none"] == pytest.approx(flat.mean()) and g["sample_len"] == len(flat)
    sizes = [len(t) for t in tasks]
    pooled_var = sum((n - 1) * t.var(ddof=1) for n, t in zip(sizes, tasks)) / (sum(sizes) - len(sizes))
    assert g["acc_stderr,none"] == pytest.approx(math.sqrt(pooled_var / sum(sizes)))
    same = [np.array([1.0, 0.0] * 5), np.array([0.0, 1.0] * 8)]
    b2 = [leaf_block([{"acc": x} for x in t], ("acc",), "s", "s") for t in same]
    assert group_block(b2, ("acc",), "g", "g")["acc_stderr,none"] == pytest.approx(
        np.concatenate(same).std(ddof=1) / math.sqrt(26), rel=0.05)
    one = leaf_block([{"acc": 1.0}], ("acc",), "one", "one")
    assert one["acc_stderr,none"] == "N/A" and group_block(blocks + [one], ("acc",), "g", "g")["acc_stderr,none"] == "N/A"


def test_pooled_stderr_equals_lm_evals():
    metrics = pytest.importorskip("lm_eval.api.metrics")
    stderrs, sizes = [0.05, 0.12, 0.031, 0.2], [100, 14, 311, 5]
    assert pooled_stderr(stderrs, sizes) == pytest.approx(metrics.pooled_sample_stderr(stderrs, sizes), rel=1e-12)
