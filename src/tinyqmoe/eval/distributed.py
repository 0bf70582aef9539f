"""Optional scale-out: shard the questions over Ray actors (`pip install tinyqmoe[distributed]`).

Each actor loads its own model from the `ModelSpec` and scores chunks of questions with the same
`score_doc` as the single-process run; the driver writes each returned record to the samples
jsonl, so a Ray run resumes like a local one and gives the same per-question results.

  workers=N        start a local Ray cluster with N one-CPU actors (shut down afterwards)
  address=ADDR     join an existing cluster ("auto", "ray://host:10001"); one actor per CPU
                   unless `workers` is also given
"""
from __future__ import annotations

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.scorer import LocalScorer, ModelSpec, describe
from tinyqmoe.eval.tasks import TASKS

CHUNK = 4  # questions per request: small, so progress is smooth and a kill loses little


class _Worker:
    def __init__(self, spec: ModelSpec):
        self.model = spec.load()

    def describe(self) -> dict:
        return describe(self.model)

    def score(self, task_name: str, docs: list, shots: int, add_bos) -> list[dict]:
        out: list[dict] = []
        LocalScorer(self.model).run(TASKS[task_name], docs, shots, add_bos, out.append)
        return out


class RayScorer:
    """The `LocalScorer` interface over a pool of Ray actors."""

    def __init__(self, spec: ModelSpec, workers: int | None = None, address: str | None = None):
        try:
            import ray
        except ImportError as exc:
            raise UsageError("Ray is not installed: pip install 'tinyqmoe[distributed]'") from exc
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, logging_level="ERROR")
            else:
                ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR",
                         object_store_memory=100 * 2**20)
                self.started = True
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1)(_Worker)
        self.actors = [actor.remote(spec) for _ in range(n)]

    def describe(self) -> dict:
        return self.ray.get(self.actors[0].describe.remote())

    def run(self, task, docs, shots: int, add_bos, on_record) -> None:
        ray = self.ray
        chunks = [docs[i:i + CHUNK] for i in range(0, len(docs), CHUNK)][::-1]
        free, pending = list(self.actors), {}
        while chunks or pending:
            while free and chunks:
                a = free.pop()
                pending[a.score.remote(task.name, chunks.pop(), shots, add_bos)] = a
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                free.append(pending.pop(ref))
                for rec in ray.get(ref):
                    on_record(rec)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()
