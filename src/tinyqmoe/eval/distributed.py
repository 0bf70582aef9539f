"""Optional scale-out: shard the questions over Ray actors (`pip install tinyqmoe[distributed]`).

Each actor loads its own model from the `ModelSpec` and runs jobs with the same `LocalScorer` as a
single process. Shards keep a task's questions together, so an MMLU subject's 5-shot prefix is
computed once per run, and are balanced by tokens: the first actor tokenizes every job (the new
tokens each question runs, plus its task's shared prefix once), then whole tasks (tasks without a
shared prefix, such as 0-shot ARC: single jobs) go, largest first, to the actor with the fewest
tokens so far (LPT). Each actor runs its jobs in order; the
driver writes each returned record to the samples jsonl, so a Ray run resumes like a local one.
With the engine's per-row arithmetic (batched.PATH) the records equal a single process's.

  workers=N        start a local Ray cluster with N one-CPU actors (shut down afterwards)
  address=ADDR     join an existing cluster ("auto", "ray://host:10001"); one actor per CPU
                   unless `workers` is also given
"""
from __future__ import annotations

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.batched import MAX_ROWS
from tinyqmoe.eval.local import Job, LocalScorer
from tinyqmoe.eval.spec import ModelSpec


class _Worker:
    def __init__(self, spec: ModelSpec, max_rows: int):
        self.scorer = LocalScorer(spec.load(), max_rows=max_rows)

    def describe(self) -> dict:
        return self.scorer.describe()

    def set_prefill(self, path: str) -> None:
        self.scorer.set_prefill(path)

    def tokens(self, jobs: list[Job], add_bos) -> list[tuple[int, int]]:
        return [self.scorer.new_tokens(j, add_bos) for j in jobs]

    def run(self, job: Job, add_bos) -> list[tuple[str, dict]]:
        out: list = []
        self.scorer.run([job], add_bos, lambda task, rec: out.append((task, rec)))
        return out


def balance(costs: dict[str, int], n: int) -> list[list[str]]:
    """Tasks to n shards, largest first to the lightest shard (LPT); ties by name."""
    shards: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for task in sorted(costs, key=lambda t: (-costs[t], t)):
        i = min(range(n), key=lambda k: (load[k], k))
        shards[i].append(task)
        load[i] += costs[task]
    return shards


class RayScorer:
    """The `LocalScorer` interface over a pool of Ray actors."""

    def __init__(self, spec: ModelSpec, workers: int | None = None, address: str | None = None,
                 max_rows: int = MAX_ROWS):
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
        self.actors = [actor.remote(spec, max_rows) for _ in range(n)]

    def describe(self) -> dict:
        return self.ray.get(self.actors[0].describe.remote())

    def set_prefill(self, path: str) -> None:
        self.ray.get([a.set_prefill.remote(path) for a in self.actors])

    def run(self, jobs: list[Job], add_bos, on_record) -> None:
        ray = self.ray
        if not jobs:
            return
        # units of work: a task with a shared prefix stays whole; others (ARC 0-shot) split by job
        units: dict[str, list[Job]] = {}
        costs: dict[str, int] = {}
        for i, (job, (own, shared)) in enumerate(zip(jobs, ray.get(self.actors[0].tokens.remote(jobs, add_bos)))):
            key = job.task if shared else f"{job.task}#{i}"
            units.setdefault(key, []).append(job)
            costs[key] = costs.get(key, shared) + own
        pending = {}
        for actor, keys in zip(self.actors, balance(costs, len(self.actors))):
            for job in (j for key in keys for j in units[key]):
                pending[actor.run.remote(job, add_bos)] = job
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                for task, rec in ray.get(ref):
                    on_record(task, rec)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()
