"""Results: per-task metrics shaped like lm-evaluation-harness's results JSON, and markdown tables.

results.json (keys as lm-eval writes them, plus ours marked +):
  results[task]    {"alias", "acc,none", "acc_stderr,none", "acc_ci95,none"+, "acc_norm,none", ...,
                    "latency_s,none"+ (mean seconds per question), "tokens_per_s,none"+,
                    "truncated,none"+ (questions whose context was cut to the window)}
                   MMLU also gets one "mmlu_<subject>" entry per subject; "mmlu" is the micro average.
  groups, group_subtasks, configs, versions, n-shot, higher_is_better, n-samples, config, date
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from tinyqmoe.eval import stats
from tinyqmoe.eval.store import json_safe
from tinyqmoe.fileio import atomic_write_text


def metric_block(records: list[dict], metrics: tuple[str, ...], alias: str) -> dict:
    out: dict = {"alias": alias}
    n = len(records)
    for m in metrics:
        x = np.array([r[m] for r in records], dtype=np.float64)
        out[f"{m},none"] = float(x.mean()) if n else float("nan")
        out[f"{m}_stderr,none"] = stats.stderr(x)
        out[f"{m}_ci95,none"] = list(stats.wilson(int(x.sum()), n))
    seconds = sum(r["seconds"] for r in records)
    tokens = sum(r["n_ctx_tokens"] + r["n_cont_tokens"] for r in records)
    out["latency_s,none"] = seconds / n if n else float("nan")
    out["tokens_per_s,none"] = tokens / seconds if seconds > 0 else float("nan")
    out["truncated,none"] = sum(bool(r["truncated"]) for r in records)
    return out


def build_results(per_task: dict, config: dict) -> dict:
    res: dict = {"results": {}, "groups": {}, "group_subtasks": {}, "configs": {}, "versions": {},
                 "n-shot": {}, "higher_is_better": {}, "n-samples": {}, "samples": {}, "config": config,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for name, t in per_task.items():
        task, records = t["task"], t["records"]
        res["results"][name] = metric_block(records, task.metrics, name)
        res["versions"][name] = task.version
        res["n-shot"][name] = t["shots"]
        res["higher_is_better"][name] = {m: True for m in task.metrics}
        res["n-samples"][name] = {"original": t["n_total"], "effective": len(records)}
        res["samples"][name] = t["samples"]
        res["configs"][name] = {"task": name, "description": task.description,
                                "doc_to_text": task.doc_to_text,
                                "doc_to_choice": list(task.doc_to_choice) if task.doc_to_choice else "{{choices}}",
                                "target_delimiter": task.target_delimiter,
                                "fewshot_delimiter": task.fewshot_delimiter,
                                "fewshot_source": task.fewshot_source, "num_fewshot": t["shots"],
                                "limit_sampling": "stratified by subject" if task.stratified else "first N",
                                "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                                for m in task.metrics]}
        if task.stratified:  # MMLU: subjects as subtasks, the group as the micro average
            by_subject: dict[str, list[dict]] = {}
            for r in records:
                by_subject.setdefault(r["subject"], []).append(r)
            subs = []
            for s in sorted(by_subject):
                res["results"][f"{name}_{s}"] = metric_block(by_subject[s], task.metrics, f" - {s}")
                subs.append(f"{name}_{s}")
            res["groups"][name] = res["results"][name]
            res["group_subtasks"][name] = subs
    return res


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def ci(lo_hi) -> str:
    return f"[{pct(lo_hi[0])}, {pct(lo_hi[1])}]"


def markdown_table(results: dict) -> str:
    rows = ["| Task | Split | Shots | n | acc % [95% CI] | acc_norm % [95% CI] | s/question | tokens/s |",
            "|---|---|---:|---:|---|---|---:|---:|"]
    split = results["config"].get("split", "")
    for name in results["n-shot"]:
        r = results["results"][name]
        norm = f"{pct(r['acc_norm,none'])} {ci(r['acc_norm_ci95,none'])}" if "acc_norm,none" in r else "–"
        rows.append(f"| {name} | {split} | {results['n-shot'][name]} | {results['n-samples'][name]['effective']} "
                    f"| {pct(r['acc,none'])} {ci(r['acc_ci95,none'])} | {norm} "
                    f"| {r['latency_s,none']:.3f} | {r['tokens_per_s,none']:.0f} |")
    c = results["config"]
    title = f"**{c['model']}** ({c['weights']}, {c.get('bits_per_weight') or '?'} bits/weight)"
    return title + "\n\n" + "\n".join(rows) + "\n"


def write_results(out: Path, results: dict) -> None:
    atomic_write_text(out / "results.json", json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "results.md", markdown_table(results))
