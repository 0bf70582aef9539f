"""The paper's table: several variants of one model on the same questions, side by side.

    table = compare([ModelSpec.parse("Original=default:f32"), ModelSpec.parse("8-bit=default:int8"),
                     ModelSpec.parse("Compressed=smol.tqm")], ["arc_easy"], output="out/cmp")

Each variant runs through `runner.run` into its own sub-directory (so each is resumable); then
every variant is paired with the first one (the baseline) question by question: the accuracy
difference with a paired-bootstrap 95% CI and the exact McNemar p-value. Writes compare.json,
compare.md and pareto.png (accuracy against bits per weight).
"""
from __future__ import annotations

import json
from pathlib import Path

from tinyqmoe.errors import UsageError
from tinyqmoe.eval import stats
from tinyqmoe.eval.report import ci, pct
from tinyqmoe.eval.runner import run, slug
from tinyqmoe.eval.spec import ModelSpec
from tinyqmoe.eval.store import json_safe
from tinyqmoe.eval.tasks import get_tasks, leaves_of
from tinyqmoe.fileio import atomic_write_text


def compare(specs: list[ModelSpec], tasks, split: str = "test", limit=None,
            shots: int | None = None, output: str | Path = "eval-out/compare", progress: bool = True,
            workers: int | None = None, ray_address: str | None = None, plot: bool = True,
            variants_dir: str | Path | None = None, sample=None, **options) -> dict:
    """Run (or resume) each variant in `variants_dir`/<title>/ (default: `output`), then write the
    tables and plot to `output`."""
    if len(specs) < 2:
        raise UsageError("--compare needs at least two model variants")
    titles = [s.title for s in specs]
    if len(set(titles)) != len(titles):
        raise UsageError(f"variant names repeat ({', '.join(titles)}); label them LABEL=MODEL[:WEIGHTS]")
    out = Path(output)
    variants = []
    for spec in specs:
        target = spec if (workers or ray_address) else spec.load()
        results, records = run(target, tasks, split, limit, shots, Path(variants_dir or out) / slug(spec.title),
                               workers=workers, ray_address=ray_address, progress=progress, sample=sample,
                               **options)
        del target  # one model in memory at a time
        variants.append({"title": spec.title, "results": results, "records": records})
    table = paired_table(variants, get_tasks(tasks))
    atomic_write_text(out / "compare.json", json.dumps(json_safe(table), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "compare.md", compare_markdown(table))
    if plot:
        from tinyqmoe.eval.plot import pareto_png
        pareto_png(table, out / "pareto.png")
    return table


def _keyed(records: dict[str, list[dict]], name: str) -> dict[tuple[str, int], dict]:
    return {(leaf, r["doc_id"]): r for leaf in leaves_of(name) for r in records[leaf]}


def paired_table(variants: list[dict], names: list[str]) -> dict:
    """Per task asked for: each variant's metrics, and each variant's paired difference to the first."""
    base = variants[0]
    table = {"variants": [], "tasks": {}}
    for v in variants:
        c = v["results"]["tinyqmoe"]["config"]
        table["variants"].append({"title": v["title"], "model": c["model"], "weights": c["weights"],
                                  "bits_per_weight": c.get("bits_per_weight")})
    for name in names:
        metrics = [m for m in ("acc", "acc_norm") if f"{m},none" in base["results"]["results"][name]]
        base_recs = _keyed(base["records"], name)
        entry = {"n": len(base_recs), "metrics": metrics, "per_variant": [], "vs_first": []}
        for v in variants:
            r, x = v["results"]["results"][name], v["results"]["tinyqmoe"]["tasks"][name]
            entry["per_variant"].append({**{m: r[f"{m},none"] for m in metrics},
                                         **{f"{m}_ci95": x[f"{m}_ci95"] for m in metrics},
                                         "latency_s": x["latency_s"], "prefill_tokens": x["prefill_tokens"]})
        for v in variants[1:]:
            recs = _keyed(v["records"], name)
            ids = [i for i in base_recs if i in recs]
            if len(ids) != len(base_recs) or len(recs) != len(base_recs):
                raise UsageError(f"{v['title']} scored other {name} questions than {base['title']}")
            diffs = {}
            for m in metrics:
                a = [recs[i][m] for i in ids]
                b = [base_recs[i][m] for i in ids]
                diffs[m] = {**stats.paired_bootstrap(a, b), "mcnemar": stats.mcnemar_exact(a, b)}
            entry["vs_first"].append({"title": v["title"], **diffs})
        table["tasks"][name] = entry
    return table


def compare_markdown(table: dict) -> str:
    titles = [v["title"] for v in table["variants"]]
    base = titles[0]
    lines = ["| Task | Metric | n | " + " | ".join(titles) + " |",
             "|---|---|---:|" + "---|" * len(titles)]
    for name, e in table["tasks"].items():
        for m in e["metrics"]:
            cells = [f"{pct(p[m])} {ci(p[f'{m}_ci95'])}" for p in e["per_variant"]]
            lines.append(f"| {name} | {m} % | {e['n']} | " + " | ".join(cells) + " |")
        cells = [f"{p['latency_s']:.3f}" for p in e["per_variant"]]
        lines.append(f"| {name} | s/question | {e['n']} | " + " | ".join(cells) + " |")
    bits = [v["bits_per_weight"] for v in table["variants"]]
    lines.append("| – | bits/weight | – | " + " | ".join("?" if b is None else f"{b:.2f}" for b in bits) + " |")
    lines += ["", f"Paired differences against {base} (same questions; 95% CI by paired bootstrap, "
                  "10000 resamples; McNemar exact test):", "",
              "| Task | Metric | Variant | Δ points [95% CI] | McNemar p | only base right | only variant right |",
              "|---|---|---|---|---:|---:|---:|"]
    for name, e in table["tasks"].items():
        for d in e["vs_first"]:
            for m in e["metrics"]:
                x = d[m]
                lines.append(f"| {name} | {m} | {d['title']} | {100 * x['diff']:+.1f} {ci(x['ci95'])} "
                             f"| {x['mcnemar']['p_value']:.3g} | {x['mcnemar']['b_only']} "
                             f"| {x['mcnemar']['a_only']} |")
    return "\n".join(lines) + "\n"
