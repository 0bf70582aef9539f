"""The size/accuracy Pareto plot: accuracy of each variant against its bits per weight."""
from __future__ import annotations

import io
from pathlib import Path

from tinyqmoe.fileio import atomic_write_bytes


def pareto_png(table: dict, path: str | Path) -> bool:
    """Write the plot; False (and no file) when no variant knows its bits per weight."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = table["variants"]
    known = [i for i, v in enumerate(variants) if v["bits_per_weight"] is not None]
    if not known:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    top: dict[float, float] = {}   # each variant is labelled once, above its highest point
    for name, e in table["tasks"].items():
        m = e["metrics"][-1]  # acc_norm where the task has it (ARC), else acc
        xs = [variants[i]["bits_per_weight"] for i in known]
        ys = [100 * e["per_variant"][i][m] for i in known]
        lo = [max(0.0, 100 * (e["per_variant"][i][m] - e["per_variant"][i][f"{m}_ci95"][0])) for i in known]
        hi = [max(0.0, 100 * (e["per_variant"][i][f"{m}_ci95"][1] - e["per_variant"][i][m])) for i in known]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, linestyle="none", label=f"{name} ({m})")
        for x, y in zip(xs, ys):
            top[x] = max(top.get(x, y), y)
    labels: dict[tuple[float, float], list[str]] = {}  # variants on the same point share a label
    for i in known:
        x = variants[i]["bits_per_weight"]
        labels.setdefault((x, round(top[x], 6)), []).append(variants[i]["title"])
    level: dict[float, int] = {}   # points at one accuracy, left to right: their labels stacked upwards
    for (x, y), names in sorted(labels.items()):
        k = level[y] = level.get(y, -1) + 1
        ax.annotate(" / ".join(names), (x, y), textcoords="offset points", xytext=(4, 4 + 9 * k), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per weight (log scale)")
    ax.set_ylabel("accuracy % (95% Wilson CI)")
    ax.set_title("Accuracy against model size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
