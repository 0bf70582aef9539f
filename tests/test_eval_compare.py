"""Comparisons: pairing by question, known differences, markdown and per-task limits."""
import pytest

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.compare import compare_markdown, paired_table
from tinyqmoe.eval.report import metric_block
from tinyqmoe.eval.runner import parse_limit, task_limit


def _variant(title, accs, bits):
    recs = [{"doc_id": f"q{i}", "acc": a, "acc_norm": a, "seconds": 0.5, "n_ctx_tokens": 10,
             "n_cont_tokens": 2, "truncated": False, "subject": ""} for i, a in enumerate(accs)]
    results = {"config": {"model": "m", "weights": title, "bits_per_weight": bits},
               "results": {"arc_easy": metric_block(recs, ("acc", "acc_norm"), "arc_easy")}}
    return {"title": title, "results": results, "records": {"arc_easy": recs}}


def test_paired_differences_known_answer():
    base = _variant("Original", [1] * 30 + [0] * 10, 32.0)
    worse = _variant("4-bit", [0] * 10 + [1] * 20 + [0] * 10, 4.5)  # loses 10 questions, gains none
    table = paired_table([base, worse])
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
        paired_table([base, other])


def test_limit_syntax():
    assert parse_limit("50") == 50 and parse_limit(None) is None
    lim = parse_limit("mmlu=150, arc_easy=300")
    assert lim == {"mmlu": 150, "arc_easy": 300}
    assert task_limit(lim, "arc_challenge") is None and task_limit(7, "mmlu") == 7
    with pytest.raises(UsageError):
        parse_limit("mmlu=lots")
