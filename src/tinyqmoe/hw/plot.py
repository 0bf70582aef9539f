"""PNG of latency vs working set, knees and OS-stated sizes marked (matplotlib, Agg)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tinyqmoe.units import format_binary


human = format_binary  # cache sizes are binary, as the OS states them


def plot_probe(result, path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.plot(result.sizes, result.triangular_ns, "o-", ms=3, label="triangular walk (median)")
    ax.plot(result.sizes, result.chase_ns, "s-", ms=3, alpha=0.7, label="pointer chase (median)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    for name, size, color in (("L1", result.l1, "C2"), ("L2", result.l2, "C3"),
                              ("L3", result.l3, "C4")):
        if size:
            ax.axvline(size, color=color, ls="--", lw=1.5)
            ax.text(size, ax.get_ylim()[1], f" {name} knee\n {human(size)}", color=color,
                    va="top", fontsize=8)
    for name, size in result.os_sizes.items():
        if size <= result.sizes[-1] * 2:
            ax.axvline(size, color="grey", ls=":", lw=1.2)
            ax.text(size, ax.get_ylim()[0], f" OS {name}\n {human(size)}", color="grey",
                    va="bottom", fontsize=8)
    ticks = [s for s in result.sizes if (s & (s - 1)) == 0]
    ax.set_xticks(ticks, [human(s) for s in ticks], rotation=45, fontsize=7)
    ax.set_xlabel("working set")
    ax.set_ylabel("ns per access")
    thp = f"THP {result.thp_mode}, huge pages used: {human(result.huge_page_bytes)}"
    ax.set_title(f"{result.cpu_model}\n{thp}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
