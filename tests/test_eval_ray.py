"""Ray sharding (optional extra): a local 2-worker cluster gives the single-process records."""
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from eval_fakes import FakeModel  # noqa: E402
from tinyqmoe.eval.runner import ModelSpec, run  # noqa: E402


def test_two_ray_workers_give_the_same_records(tmp_path, monkeypatch):
    tests = str(Path(__file__).parent)  # the workers import eval_fakes from here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    spec = ModelSpec("fake", "f32", factory="eval_fakes:load_fake")
    res, recs = run(spec, "arc_easy,mmlu", split="validation", limit=10, output=tmp_path / "ray",
                    workers=2, progress=False)
    ref_res, ref = run(FakeModel(), "arc_easy,mmlu", split="validation", limit=10,
                       output=tmp_path / "local", progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    for task in ("arc_easy", "mmlu"):
        assert strip(recs[task]) == strip(ref[task])
        assert res["results"][task]["acc,none"] == ref_res["results"][task]["acc,none"]
    assert res["config"]["workers"] == 2
    assert not ray.is_initialized()  # the cluster we started is shut down
