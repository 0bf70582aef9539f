"""Check of truth: on the default model in f32, our per-choice log-likelihoods equal those that
transformers computes on the same token ids (|diff| < 1e-3 nats), and the chosen answers agree."""
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from eval_reference import TransformersModel, crosscheck  # noqa: E402


@pytest.fixture(scope="module")
def models(default_gguf):
    import tinyqmoe
    ours = tinyqmoe.load(default_gguf, weights="f32")
    return ours, TransformersModel(default_gguf, ours.tokenizer)


@pytest.mark.parametrize("task,limit,shots", [("arc_easy", 4, 0), ("mmlu", 2, 1)])
def test_loglikelihoods_match_transformers(task, limit, shots, models):
    r = crosscheck(task, limit, "test", shots, *models)[task]
    assert r["questions"] == limit
    assert r["max_abs_loglik_diff"] < 1e-3
    assert r["same_pred"] == r["same_pred_norm"] == limit
