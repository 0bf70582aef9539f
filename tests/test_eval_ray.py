"""Ray sharding (optional extra): a local 2-worker cluster gives the single-process records."""
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from eval_fakes import FakeModel  # noqa: E402
from tinyqmoe.eval.runner import ModelSpec, run  # noqa: E402


def strip(recs):
    return [{**r, "tinyqmoe": {k: v for k, v in r["tinyqmoe"].items() if k != "seconds"}} for r in recs]


def test_balance_keeps_tasks_whole_and_evens_the_load():
    from tinyqmoe.eval.distributed import balance
    costs = {"a": 90, "b": 50, "c": 40, "d": 30, "e": 30, "f": 10}
    shards = balance(costs, 2)
    assert sorted(t for s in shards for t in s) == sorted(costs)
    assert [sum(costs[t] for t in s) for s in shards] == [130, 120]


def test_two_ray_workers_give_the_same_records(tmp_path, monkeypatch):
    tests = str(Path(__file__).parent)  # the workers import eval_fakes from here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    spec = ModelSpec("fake", "f32", factory="eval_fakes:load_fake")
    tasks = "arc_easy,mmlu_stem"
    res, recs = run(spec, tasks, split="validation", limit=40, output=tmp_path / "ray", workers=2, progress=False)
    ref_res, ref = run(FakeModel(), tasks, split="validation", limit=40, output=tmp_path / "local", progress=False)
    assert set(recs) == set(ref) and len(recs) == 20
    for task in recs:
        assert strip(recs[task]) == strip(ref[task])
    for name in ("arc_easy", "mmlu_stem"):
        assert res["results"][name] == ref_res["results"][name]
    assert res["tinyqmoe"]["config"]["workers"] == 2
    assert not ray.is_initialized()  # the cluster we started is shut down
