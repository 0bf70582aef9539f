"""Tokens of prefill per MMLU 5-shot question over the full test set, before (whole context per
question) and after (each subject's prefix once): 8 questions per subject, weighted by subject size.

    .venv/bin/python benchmarks/eval_prefill_tokens.py
"""
import json

import tinyqmoe

from tinyqmoe.eval.local import Job, LocalScorer
from tinyqmoe.eval.tasks import LEAVES, leaves_of
m = tinyqmoe.load("default", weights="int8")
sc = LocalScorer(m)
before = after = n = 0
for leaf in leaves_of("mmlu"):
    docs = LEAVES[leaf].docs("test")
    job = Job(leaf, 5, list(enumerate(docs[:8])))
    reqs = [r for r, *_ in sc.requests(job, None)]
    own, shared = sc.new_tokens(job, None)
    k = len(reqs)
    before += sum(len(r.ctx) for r in reqs) / k * len(docs)
    after += own / k * len(docs) + shared
    n += len(docs)
print(json.dumps({"questions": n, "before_tokens_per_question": before / n, "after_tokens_per_question": after / n}), flush=True)
