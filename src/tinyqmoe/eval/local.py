"""Scoring jobs in this process: a job is some questions of one task, scored in batches.

    job = Job("mmlu_anatomy", shots=5, items=[(doc_id, Doc), ...])

`LocalScorer.run(jobs, add_bos, on_record)` builds each question's request (context ids, the
shared description + shots ids), scores them with one `BatchScorer` (which keeps the last shared
prefix's KV cache, so consecutive jobs of one subject reuse it) and calls
`on_record(task, record)` for every question as its batch finishes. Ray workers run the same code.
"""
from __future__ import annotations

import dataclasses

from tinyqmoe.eval.batched import MAX_ROWS, PATH, BatchScorer, common_prefix
from tinyqmoe.eval.data import Doc
from tinyqmoe.eval.scoring import build_request, make_record
from tinyqmoe.eval.spec import describe
from tinyqmoe.eval.tasks import LEAVES


@dataclasses.dataclass
class Job:
    task: str                          # a leaf task name
    shots: int
    items: list[tuple[int, Doc]]       # (doc_id, doc)


class LocalScorer:
    def __init__(self, model, path: str = PATH, max_rows: int = MAX_ROWS):
        self.model = model
        self.scorer = BatchScorer(model, path, max_rows)
        self._prefix_texts: dict = {}

    def describe(self) -> dict:
        return describe(self.model)

    def set_prefill(self, path: str) -> None:
        """The model's prefill arithmetic ("f32" | "int8": Model.prefill_path), kept for a whole run."""
        if hasattr(self.model, "prefill_path"):
            self.model.prefill_path = path

    def requests(self, job: Job, add_bos):
        task = LEAVES[job.task].task
        pool = task.fewshot_pool() if job.shots else {}
        return [build_request(self.model, task, doc, task.shots_for(doc, pool, job.shots), add_bos,
                              self._prefix_texts) for _, doc in job.items]

    def new_tokens(self, job: Job, add_bos) -> tuple[int, int]:
        """(tokens each question adds after the shared prefix, summed; the shared prefix's tokens)."""
        reqs = [r for r, *_ in self.requests(job, add_bos)]
        shared = max((min(common_prefix(r.shared, r.ctx), len(r.ctx) - 1) for r in reqs), default=0)
        own = sum(len(r.ctx) - min(common_prefix(r.shared, r.ctx), len(r.ctx) - 1)
                  + sum(len(c) - 1 for c in r.conts) for r in reqs)
        return own, shared

    def run(self, jobs: list[Job], add_bos, on_record) -> None:
        for job in jobs:
            task = LEAVES[job.task].task
            built = self.requests(job, add_bos)
            reqs = [b[0] for b in built]
            for i, scored in self.scorer.score(reqs):
                (doc_id, doc), (req, context, conts, truncated) = job.items[i], built[i]
                on_record(job.task, make_record(task, doc, doc_id, req, context, conts, scored, truncated))

    def close(self) -> None:
        pass
