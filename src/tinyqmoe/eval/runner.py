"""Run tasks over a model: select questions, score the ones not yet stored, report.

    results = evaluate(model_or_spec, "mmlu,arc_easy", split="test", limit=50, output="out/eval")

`model_or_spec` is a loaded model (the API of `tinyqmoe.load`) or a `ModelSpec`, which says how
to load one; Ray workers need the spec, since each loads its own copy.

Selection (per leaf task; a limit given for a group applies to each of its tasks):
  limit    lm-eval's --limit: an int takes the first N documents, a float below 1 the first
           ceil(N * fraction); one value for all tasks or {name: value}.
  sample   a deterministic stratified sample of N questions over a group's subjects
           (data.stratified_sample); one value or {name: N}.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from tinyqmoe.errors import UsageError
from tinyqmoe.eval import report
from tinyqmoe.eval.batched import MAX_ROWS, PATH
from tinyqmoe.eval.data import apply_limit, stratified_sample
from tinyqmoe.eval.local import Job, LocalScorer
from tinyqmoe.eval.spec import ModelSpec, describe
from tinyqmoe.eval.store import SampleStore, check_settings, stored_setting
from tinyqmoe.eval.tasks import LEAVES, get_tasks, leaves_of

CHUNK = 32  # questions per job: a killed run loses at most the batches in flight


def parse_limit(text: str | None, flag: str = "--limit", fractions: bool = True):
    """`50`, `0.1` (a fraction, lm-eval) or `mmlu=0.1,arc_easy=100` (tasks not named: all)."""
    if text is None:
        return None

    def number(v: str):
        v = v.strip()
        if fractions and any(ch in v for ch in ".eE"):
            return float(v)
        return int(v)
    try:
        if "=" not in text:
            return number(text)
        return {k.strip(): number(v) for k, v in (item.split("=", 1) for item in text.split(",") if item.strip())}
    except ValueError:
        raise UsageError(f"{flag} takes N{', a fraction' if fractions else ''} or TASK=N[,TASK=N...], "
                         f"got {text!r}") from None


def _per_leaf(value, names: list[str], flag: str) -> dict[str, object]:
    """{leaf: value} from one value or {task or group name: value}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {leaf: value for n in names for leaf in leaves_of(n)}
    out = {}
    for name, v in value.items():
        try:
            get_tasks([name])
        except UsageError:
            raise UsageError(f"{flag} names {name!r}, not a task or group") from None
        for leaf in leaves_of(name):
            out[leaf] = v
    return out


def _per_name(value, names: list[str]) -> dict:
    """--sample: one N for every task asked for, or {task or group: N}."""
    if not isinstance(value, dict):
        return {n: value for n in names}
    get_tasks(list(value))
    return value


def select(names: list[str], split: str, limit=None, sample=None, seed: int = 1234) -> dict[str, tuple]:
    """{leaf: (all docs, [(doc_id, doc) selected])} for the tasks asked for, in order."""
    leaves = list(dict.fromkeys(leaf for n in names for leaf in leaves_of(n)))
    limits = _per_leaf(limit, names, "--limit")
    docs = {leaf: LEAVES[leaf].docs(split) for leaf in leaves}
    chosen = {leaf: apply_limit(docs[leaf], limits.get(leaf)) for leaf in leaves}
    for name, n in (_per_name(sample, names) if sample is not None else {}).items():
        in_group = [d for leaf in leaves_of(name) if leaf in chosen for d in chosen[leaf]]
        keep = {d.id for d in stratified_sample(in_group, n, seed)}
        for leaf in leaves_of(name):
            if leaf in chosen:
                chosen[leaf] = [d for d in chosen[leaf] if d.id in keep]
    index = {leaf: {d.id: i for i, d in enumerate(docs[leaf])} for leaf in leaves}
    return {leaf: (docs[leaf], [(index[leaf][d.id], d) for d in chosen[leaf]]) for leaf in leaves}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def evaluate(model_or_spec, tasks, split: str = "test", limit=None, shots: int | None = None,
             output: str | Path | None = None, add_bos: bool | None = None, workers: int | None = None,
             ray_address: str | None = None, progress: bool = True, sample=None, seed: int = 1234,
             max_rows: int = MAX_ROWS, prefill: str | None = None) -> dict:
    """Evaluate; write samples_<task>.jsonl, run.json and results_<time>.json/.md under `output`.

    Returns the results dict (lm-eval 0.4 layout, see report.py). Resumes from the samples
    already in `output`. `workers`/`ray_address` shard the questions over Ray actors. `prefill`
    ("f32" | "int8", Model.prefill_path) is the arithmetic of the prompts' int8 linears: by default
    the stored run's (a resumed run keeps it; runs stored before it was recorded used "f32"), else the
    model's; another value than a stored run's is refused.
    """
    return run(model_or_spec, tasks, split, limit, shots, output, add_bos, workers, ray_address,
               progress, sample, seed, max_rows, prefill)[0]


def run(model_or_spec, tasks, split="test", limit=None, shots=None, output=None, add_bos=None,
        workers=None, ray_address=None, progress=True, sample=None, seed=1234,
        max_rows=MAX_ROWS, prefill=None) -> tuple[dict, dict[str, list[dict]]]:
    """`evaluate`, also returning each leaf task's records in data order."""
    start = time.time()
    names = get_tasks(tasks)
    selection = select(names, split, limit, sample, seed)
    if workers is not None or ray_address is not None:
        if not isinstance(model_or_spec, ModelSpec):
            raise UsageError("Ray workers load their own model: pass a ModelSpec, not a loaded model")
        from tinyqmoe.eval.distributed import RayScorer
        scorer = RayScorer(model_or_spec, workers=workers, address=ray_address, max_rows=max_rows)
    else:
        model = model_or_spec.load() if isinstance(model_or_spec, ModelSpec) else model_or_spec
        scorer = LocalScorer(model, max_rows=max_rows)
    try:
        ident = scorer.describe()
        effective_bos = ident["add_bos"] if add_bos is None else add_bos
        out = Path(output) if output else Path("eval-out") / slug(f"{ident['name']}-{ident['weights_kind']}")
        k = {leaf: LEAVES[leaf].task.default_shots if shots is None else shots for leaf in selection}
        # a resumed run keeps the prefill arithmetic its samples were made with (runs from before the
        # setting was recorded used f32); a new one takes the model's (check_settings refuses a clash)
        if prefill not in (None, "f32", "int8"):
            raise UsageError(f"prefill path {prefill!r}: choose f32 or int8")
        prefill = prefill or stored_setting(out, "prefill", legacy="f32") or ident.get("prefill")
        if prefill:
            scorer.set_prefill(prefill)
        check_settings(out, {"model": ident["name"], "weights": ident["weights_kind"], "split": split,
                             "add_bos": effective_bos, "path": PATH, "prefill": prefill,
                             "max_rows": max_rows if PATH != "stream" else None,
                             "tasks": {leaf: {"version": LEAVES[leaf].task.version, "num_fewshot": k[leaf]}
                                       for leaf in selection}})
        stores = {leaf: SampleStore(out / f"samples_{leaf}.jsonl").open() for leaf in selection}
        try:
            jobs = []
            for leaf, (_, items) in selection.items():
                todo = [(i, d) for i, d in items if i not in stores[leaf]]
                jobs += [Job(leaf, k[leaf], todo[j:j + CHUNK]) for j in range(0, len(todo), CHUNK)]
            total = sum(len(items) for _, items in selection.values())
            label = (model_or_spec.title if isinstance(model_or_spec, ModelSpec)
                     else f"{ident['name']} {ident['weights_kind']}")
            shown = ",".join(selection) if len(selection) <= 3 else f"{len(selection)} tasks"
            bar = _progress(f"eval {shown} [{label}]", total, total - sum(len(j.items) for j in jobs), progress)

            def on_record(leaf, rec):
                stores[leaf].append(rec)
                bar.update(1)
            try:
                scorer.run(jobs, add_bos, on_record)
            finally:
                bar.close()
            records = {leaf: [stores[leaf].records[i] for i, _ in items] for leaf, (_, items) in selection.items()}
        finally:
            for s in stores.values():
                s.close()
        per_leaf = {leaf: {"records": records[leaf], "shots": k[leaf], "n_total": len(all_docs),
                           "samples": f"samples_{leaf}.jsonl"} for leaf, (all_docs, _) in selection.items()}
        title = model_or_spec.title if isinstance(model_or_spec, ModelSpec) else ident["name"]
        config = {"model": ident["name"], "weights": ident["weights_kind"], "source": ident.get("source"),
                  "bits_per_weight": ident["bits_per_weight"], "add_bos": effective_bos, "split": split,
                  "limit": limit, "sample": sample, "sample_seed": seed, "path": PATH, "prefill": prefill,
                  "max_rows": max_rows,
                  "workers": workers, "ray_address": ray_address,
                  "model_args": f"pretrained={title},weights={ident['weights_kind']}"}
        results = report.build_results(names, per_leaf, config, title, start, time.time())
        report.write_results(out, results)
        return results, records
    finally:
        scorer.close()


def _progress(desc: str, total: int, done: int, enabled: bool):
    from tinyqmoe.progress import bar
    return bar(total=total, initial=done, desc=desc, unit="q", enabled=enabled, smoothing=0.05)


__all__ = ["ModelSpec", "evaluate", "run", "describe", "LocalScorer", "select", "parse_limit"]
