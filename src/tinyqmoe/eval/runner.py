"""Run tasks over a model: select questions, score the ones not yet in the samples file, report.

    results = evaluate(model_or_spec, ["arc_easy"], split="test", limit=50, output="out/eval")

`model_or_spec` is a loaded model (the API of `tinyqmoe.load`) or a `ModelSpec`, which says how
to load one; Ray workers need the spec, since each loads its own copy.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.data import select
from tinyqmoe.eval.scorer import LocalScorer, ModelSpec, describe  # noqa: F401  (re-exported)
from tinyqmoe.eval.store import SampleStore
from tinyqmoe.eval.tasks import TASKS, get_tasks

def parse_limit(text: str | None) -> int | dict[str, int] | None:
    """`--limit 50` (every task) or `--limit mmlu=200,arc_easy=100` (tasks not named: all questions)."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(v) for k, v in (item.split("=", 1) for item in text.split(",") if item.strip())}
    except ValueError:
        raise UsageError(f"--limit takes N or TASK=N[,TASK=N...], got {text!r}") from None


def task_limit(limit: int | dict[str, int] | None, task: str) -> int | None:
    return limit.get(task) if isinstance(limit, dict) else limit


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def evaluate(model_or_spec, tasks: list[str] | str, split: str = "test", limit: int | None = None,
             shots: int | None = None, output: str | Path | None = None, add_bos: bool | None = None,
             workers: int | None = None, ray_address: str | None = None, progress: bool = True,
             seed: int = 1234) -> dict:
    """Evaluate and write `samples_*.jsonl`, `results.json`, `results.md` under `output`.

    Returns the results dict (lm-eval shaped, see report.build_results). Resumes from the samples
    files already in `output`. `workers`/`ray_address` shard the questions over Ray actors.
    """
    return run(model_or_spec, tasks, split, limit, shots, output, add_bos, workers, ray_address,
               progress, seed)[0]


def run(model_or_spec, tasks, split="test", limit=None, shots=None, output=None, add_bos=None,
        workers=None, ray_address=None, progress=True, seed=1234) -> tuple[dict, dict[str, list[dict]]]:
    """`evaluate`, also returning each task's per-question records in data order."""
    from tinyqmoe.eval import report
    task_list = get_tasks(tasks)
    if workers is not None or ray_address is not None:
        if not isinstance(model_or_spec, ModelSpec):
            raise UsageError("Ray workers load their own model: pass a ModelSpec, not a loaded model")
        from tinyqmoe.eval.distributed import RayScorer
        scorer = RayScorer(model_or_spec, workers=workers, address=ray_address)
    else:
        model = model_or_spec.load() if isinstance(model_or_spec, ModelSpec) else model_or_spec
        scorer = LocalScorer(model)
    try:
        ident = scorer.describe()
        effective_bos = ident["add_bos"] if add_bos is None else add_bos
        out = Path(output) if output else Path("eval-out") / slug(f"{ident['name']}-{ident['weights_kind']}")
        per_task = {}
        for task in task_list:
            k = task.default_shots if shots is None else shots
            all_docs = task.docs(split)
            docs = select(all_docs, task_limit(limit, task.name), task.stratified, seed)
            header = {"task": task.name, "task_version": task.version, "split": split, "shots": k,
                      "add_bos": effective_bos, "model": ident["name"], "weights": ident["weights_kind"]}
            path = out / f"samples_{task.name}_{split}_{k}shot.jsonl"
            with SampleStore(path, header) as store:
                todo = [d for d in docs if d.id not in store]
                bar = _progress(task.name, len(docs), len(docs) - len(todo), progress)
                try:
                    def on_record(rec, store=store, bar=bar):
                        store.append(rec)
                        bar.update(1)
                    scorer.run(task, todo, k, add_bos, on_record)
                finally:
                    bar.close()
                records = [store.records[d.id] for d in docs]
            per_task[task.name] = {"task": task, "shots": k, "records": records,
                                   "n_total": len(all_docs), "samples": str(path)}
        config = {"model": ident["name"], "weights": ident["weights_kind"],
                  "bits_per_weight": ident["bits_per_weight"], "add_bos": effective_bos, "split": split,
                  "limit": limit, "limit_seed": seed,
                  "source": model_or_spec.title if isinstance(model_or_spec, ModelSpec) else None,
                  "workers": workers, "ray_address": ray_address}
        results = report.build_results(per_task, config)
        report.write_results(out, results)
        return results, {name: t["records"] for name, t in per_task.items()}
    finally:
        scorer.close()


def _progress(name: str, total: int, done: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=done, desc=name, unit="q", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True, smoothing=0.05)


__all__ = ["ModelSpec", "evaluate", "describe", "LocalScorer", "TASKS"]
