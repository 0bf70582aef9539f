"""The run: results shape, resuming after a kill, settings guard, the `tinyqmoe eval` command."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tinyqmoe
from eval_fakes import FakeModel, load_fake
from tinyqmoe.cli import main
from tinyqmoe.errors import UsageError
from tinyqmoe.eval import evaluate
from tinyqmoe.eval.runner import ModelSpec, run

TESTS = Path(__file__).parent


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_results_are_shaped_like_lm_eval(tmp_path):
    res = evaluate(FakeModel(), "mmlu,arc_easy", split="validation", limit=30, output=tmp_path, progress=False)
    arc, mmlu = res["results"]["arc_easy"], res["results"]["mmlu"]
    for key in ("acc,none", "acc_stderr,none", "acc_ci95,none", "acc_norm,none", "latency_s,none",
                "tokens_per_s,none"):
        assert key in arc
    assert "acc_norm,none" not in mmlu
    assert res["n-shot"] == {"mmlu": 5, "arc_easy": 0}
    assert res["n-samples"]["arc_easy"] == {"original": 570, "effective": 30}
    assert res["n-samples"]["mmlu"] == {"original": 1531, "effective": 30}
    subs = res["group_subtasks"]["mmlu"]
    assert sum(res["n-samples"]["mmlu"]["effective"] for _ in [0]) == 30 and subs
    recs = _lines(tmp_path / "samples_mmlu_validation_5shot.jsonl")[1:]
    by_subject = {}
    for r in recs:
        by_subject.setdefault(r["subject"], []).append(r["acc"])
    for s, accs in by_subject.items():
        assert res["results"][f"mmlu_{s}"]["acc,none"] == pytest.approx(sum(accs) / len(accs))
    assert mmlu["acc,none"] == pytest.approx(sum(r["acc"] for r in recs) / 30)  # micro average
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"]["arc_easy"]["acc,none"] == arc["acc,none"]
    md = (tmp_path / "results.md").read_text()
    assert "| arc_easy | validation | 0 | 30 |" in md


def test_rerun_scores_only_missing_questions_and_drops_a_torn_line(tmp_path):
    m = FakeModel()
    evaluate(m, "arc_easy", split="validation", limit=10, output=tmp_path, progress=False)
    path = tmp_path / "samples_arc_easy_validation_0shot.jsonl"
    with open(path, "a") as f:
        f.write('{"doc_id": "torn", "lo')  # a write cut by a kill
    m2 = FakeModel()
    res = evaluate(m2, "arc_easy", split="validation", limit=15, output=tmp_path, progress=False)
    assert m2.calls == 5
    ids = [r["doc_id"] for r in _lines(path)[1:]]
    assert len(ids) == len(set(ids)) == 15
    assert res["n-samples"]["arc_easy"]["effective"] == 15


def test_other_settings_in_the_same_output_are_refused(tmp_path):
    evaluate(FakeModel(), "arc_easy", split="validation", limit=3, output=tmp_path, progress=False)
    with pytest.raises(UsageError, match="other settings"):
        evaluate(FakeModel(seed=0, weights="int8"), "arc_easy", split="validation", limit=3,
                 output=tmp_path, progress=False)


KILLED_RUN = """
import sys
sys.path.insert(0, {tests!r})
from eval_fakes import FakeModel
from tinyqmoe.eval import evaluate
evaluate(FakeModel(delay=0.05), "arc_easy", split="validation", limit=60, output={out!r}, progress=False)
"""


def test_killed_run_continues_where_it_stopped(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(tests=str(TESTS), out=str(out))])
    path = out / "samples_arc_easy_validation_0shot.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) > 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(path.read_text().splitlines()) - 1
    assert 10 <= done < 60
    m = FakeModel()
    _, records = run(m, "arc_easy", split="validation", limit=60, output=out, progress=False)
    assert 60 - done - 1 <= m.calls <= 60 - done  # at most the question in flight is redone
    ref_model = FakeModel()
    _, ref = run(ref_model, "arc_easy", split="validation", limit=60, output=tmp_path / "ref", progress=False)
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]
    assert strip(records["arc_easy"]) == strip(ref["arc_easy"])


def test_model_spec_parsing():
    s = ModelSpec.parse("Original=default:f32", threads=2)
    assert (s.label, s.source, s.weights, s.threads, s.title) == ("Original", "default", "f32", 2, "Original")
    assert ModelSpec.parse("smol.tqm").title == "smol.tqm" and ModelSpec.parse("smol.tqm").weights is None
    assert ModelSpec.parse("C:/x/m.gguf:int8").source == "C:/x/m.gguf"
    with pytest.raises(UsageError):
        ModelSpec.parse("A=:int8")


def test_cli_eval_and_compare(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tinyqmoe, "load", load_fake, raising=False)
    rc = main(["eval", "fake:f32", "--tasks", "arc_easy", "--split", "validation", "--limit", "8",
               "--output", str(tmp_path / "one"), "--no-progress"])
    assert rc == 0
    assert "| arc_easy | validation | 0 | 8 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "one/results.json").read_text())["config"]["weights"] == "f32"
    rc = main(["eval", "--compare", "Original=fake:f32", "8-bit=fake:int8", "Noisy=fake-noisy:f32",
               "--tasks", "arc_easy,mmlu", "--split", "validation", "--limit", "12",
               "--output", str(tmp_path / "cmp"), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| Task | Metric | n | Original | 8-bit | Noisy |" in out
    assert "| arc_easy | acc_norm | Noisy |" in out
    assert (tmp_path / "cmp/pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cmp/Original/samples_arc_easy_validation_0shot.jsonl").exists()
    assert main(["eval", "--tasks", "arc_easy"]) == 2  # neither MODEL nor --compare
    assert main(["eval", "fake", "--tasks", "nope"]) == 2
