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
from tinyqmoe.eval.tasks import leaves_of

TESTS = Path(__file__).parent


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def _results_file(out):
    (path,) = sorted(Path(out).glob("results_*.json"))[-1:]
    return json.loads(path.read_text())


def test_results_are_shaped_like_lm_eval(tmp_path):
    res = evaluate(FakeModel(), "mmlu,arc_easy", split="validation", limit=2, output=tmp_path, progress=False)
    for key in ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                "n-samples", "config", "git_hash", "date", "model_name", "model_name_sanitized",
                "total_evaluation_time_seconds", "lm_eval_version", "tinyqmoe"):
        assert key in res
    assert isinstance(res["date"], float) and isinstance(res["total_evaluation_time_seconds"], str)
    arc, mmlu = res["results"]["arc_easy"], res["results"]["mmlu"]
    assert {"acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none", "alias"} <= set(arc)
    assert "acc_norm,none" not in mmlu and "latency_s,none" not in arc  # ours live in "tinyqmoe"
    assert {"acc_ci95", "latency_s", "prefill_tokens"} <= set(res["tinyqmoe"]["tasks"]["arc_easy"])
    assert list(res["results"])[:3] == ["mmlu", "mmlu_stem", "mmlu_abstract_algebra"]  # lm-eval's order
    assert res["group_subtasks"]["mmlu"] == ["mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"]
    assert res["groups"]["mmlu"] == mmlu and res["group_subtasks"]["arc_easy"] == []
    assert res["n-shot"]["mmlu_anatomy"] == 5 and res["n-shot"]["arc_easy"] == 0
    assert res["n-samples"]["arc_easy"] == {"original": 570, "effective": 2}
    assert res["n-samples"]["mmlu_anatomy"] == {"original": 14, "effective": 2}  # --limit per subject
    assert mmlu["sample_len"] == 2 * 57
    lines = [json.loads(x) for x in (tmp_path / "samples_mmlu_anatomy.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in lines] == [0, 1]  # integer ids, no header line
    recs = [json.loads(x) for leaf in leaves_of("mmlu")
            for x in (tmp_path / f"samples_{leaf}.jsonl").read_text().splitlines()]
    assert mmlu["acc,none"] == pytest.approx(sum(r["acc"] for r in recs) / len(recs))  # size-weighted
    assert _results_file(tmp_path)["results"]["arc_easy"]["acc,none"] == arc["acc,none"]
    assert "| arc_easy | validation | 0 | 2 |" in next(tmp_path.glob("results_*.md")).read_text()


def test_limit_fraction_and_sample(tmp_path):
    res = evaluate(FakeModel(), "mmlu_anatomy,arc_easy", split="validation", limit=0.1, output=tmp_path,
                   progress=False)
    assert res["n-samples"]["arc_easy"]["effective"] == 57 and res["n-samples"]["mmlu_anatomy"]["effective"] == 2
    res = evaluate(FakeModel(), "mmlu", split="validation", sample=60, output=tmp_path / "s", progress=False)
    assert res["results"]["mmlu"]["sample_len"] == 60


def test_rerun_scores_only_missing_questions_keeps_earlier_results_and_drops_a_torn_line(tmp_path):
    m = FakeModel()
    evaluate(m, "arc_easy", split="validation", limit=10, output=tmp_path, progress=False)
    path = tmp_path / "samples_arc_easy.jsonl"
    with open(path, "a") as f:
        f.write('{"doc_id": 99, "lo')  # a write cut by a kill
    m2 = FakeModel()
    time.sleep(0.01)
    res = evaluate(m2, "arc_easy,mmlu_anatomy", split="validation", limit=15, output=tmp_path, progress=False)
    assert m2.questions == 5 + 1 + 14  # 5 new ARC questions, anatomy's shared prefix once, its 14; none again
    ids = [r["doc_id"] for r in _lines(path)]
    assert len(ids) == len(set(ids)) == 15
    assert res["n-samples"]["arc_easy"]["effective"] == 15
    assert len(list(tmp_path.glob("results_*.json"))) == 2  # one per run, none overwritten
    assert set(json.loads((tmp_path / "run.json").read_text())["tasks"]) == {"arc_easy", "mmlu_anatomy"}


def test_other_settings_in_the_same_output_are_refused(tmp_path):
    evaluate(FakeModel(), "arc_easy", split="validation", limit=3, output=tmp_path, progress=False)
    with pytest.raises(UsageError, match="other settings"):
        evaluate(FakeModel(seed=0, weights="int8"), "arc_easy", split="validation", limit=3,
                 output=tmp_path, progress=False)
    with pytest.raises(UsageError, match="arc_easy"):
        evaluate(FakeModel(), "arc_easy", split="validation", limit=3, shots=2, output=tmp_path, progress=False)
    with pytest.raises(UsageError, match="max_rows"):  # other batches, other rounding on the blocked path
        evaluate(FakeModel(), "arc_easy", split="validation", limit=3, max_rows=64, output=tmp_path, progress=False)


def test_a_resumed_run_keeps_its_prefill_arithmetic(tmp_path):
    """run.json records the model's prefill path; a resumed run sets the model back to it, and a run
    stored before the setting existed counts as "f32" (what every long prompt then ran)."""
    model = FakeModel()
    model.prefill_path = "int8"
    evaluate(model, "arc_easy", split="validation", limit=2, output=tmp_path / "new", progress=False)
    assert json.loads((tmp_path / "new" / "run.json").read_text())["prefill"] == "int8"
    evaluate(FakeModel(), "arc_easy", split="validation", limit=2, output=tmp_path / "old", progress=False)
    settings = json.loads((tmp_path / "old" / "run.json").read_text())
    del settings["prefill"]                            # as written before the setting was recorded
    (tmp_path / "old" / "run.json").write_text(json.dumps(settings))
    model = FakeModel()
    model.prefill_path = "int8"
    evaluate(model, "arc_easy", split="validation", limit=4, output=tmp_path / "old", progress=False)
    assert model.prefill_path == "f32"
    assert json.loads((tmp_path / "old" / "run.json").read_text())["prefill"] == "f32"
    with pytest.raises(UsageError, match="other settings .prefill"):
        evaluate(model, "arc_easy", split="validation", limit=4, output=tmp_path / "old", progress=False,
                 prefill="int8")


KILLED_RUN = """
import sys
sys.path.insert(0, {tests!r})
from eval_fakes import FakeModel
from tinyqmoe.eval import evaluate
evaluate(FakeModel(delay=0.05), "arc_easy", split="validation", limit=60, output={out!r}, progress=False)
"""


def strip(recs):
    """Records without their timings (which differ between runs)."""
    return [{**r, "tinyqmoe": {k: v for k, v in r["tinyqmoe"].items() if k not in ("seconds", "prefill_tokens")}}
            for r in recs]


def test_killed_run_continues_where_it_stopped(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(tests=str(TESTS), out=str(out))])
    path = out / "samples_arc_easy.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) > 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(path.read_text().splitlines())
    assert 10 <= done < 60
    m = FakeModel()
    _, records = run(m, "arc_easy", split="validation", limit=60, output=out, progress=False)
    assert m.questions == 60 - done  # a torn line at most: it is dropped and redone
    ref_model = FakeModel()
    _, ref = run(ref_model, "arc_easy", split="validation", limit=60, output=tmp_path / "ref", progress=False)
    assert strip(records["arc_easy"]) == strip(ref["arc_easy"])


def test_model_spec_parsing():
    s = ModelSpec.parse("Original=default:f32", threads=2)
    assert (s.label, s.source, s.weights, s.threads, s.title) == ("Original", "default", "f32", 2, "Original")
    assert ModelSpec.parse("smol.tqm").title == "smol.tqm" and ModelSpec.parse("smol.tqm").weights is None
    assert ModelSpec.parse("C:/x/m.gguf:int8").source == "C:/x/m.gguf"
    with pytest.raises(UsageError):
        ModelSpec.parse("A=:int8")


def test_cli_eval_and_compare(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setattr(tinyqmoe, "load", load_fake, raising=False)
    caplog.set_level("INFO", logger="tinyqmoe")
    rc = main(["eval", "fake:f32", "--tasks", "arc_easy", "--split", "validation", "--limit", "8",
               "--output", str(tmp_path / "one"), "--no-progress", "-v"])
    assert rc == 0
    assert "| arc_easy | validation | 0 | 8 |" in capsys.readouterr().out
    assert "loaded fake:f32: f32 weights" in caplog.text and "source" in caplog.text   # -v: what was loaded
    assert _results_file(tmp_path / "one")["tinyqmoe"]["config"]["weights"] == "f32"
    rc = main(["eval", "--compare", "Original=fake:f32", "8-bit=fake:int8", "Noisy=fake-noisy:f32",
               "--tasks", "arc_easy,mmlu", "--split", "validation", "--limit", "12",
               "--output", str(tmp_path / "cmp"), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| Task | Metric | n | Original | 8-bit | Noisy |" in out
    assert "| arc_easy | acc_norm | Noisy |" in out
    assert (tmp_path / "cmp/pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cmp/Original/samples_arc_easy.jsonl").exists()
    assert main(["eval", "--tasks", "arc_easy"]) == 2  # neither MODEL nor --compare
    assert main(["eval", "fake", "--tasks", "nope"]) == 2


def test_a_record_with_unicode_line_separators_reopens(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028 / U+0085 raw; str.splitlines would cut the record there
    from tinyqmoe.eval.store import SampleStore
    path = tmp_path / "samples_x.jsonl"
    with SampleStore(path) as s:
        s.append({"doc_id": 0, "doc": {"question": "a\u2028b\x85c\x1cd"}})
        s.append({"doc_id": 1, "doc": {"question": "plain"}})
    with SampleStore(path) as s:
        assert s.records[0]["doc"]["question"] == "a\u2028b\x85c\x1cd"
        assert set(s.records) == {0, 1}
