"""Untiled vs tiled-by-selection vs best-of-autotune on one PolyBench kernel.

Timing discipline (the machine is shared and noisy): the contenders run interleaved,
each repetition runs untiled, selected and autotuned back to back on fresh copies of the
inputs, and we report medians and ratios of medians, never one absolute time.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from tinyqmoe.tiling.codegen import Program
from tinyqmoe.tiling.legality import check_band
from tinyqmoe.tiling.plan import TilePlan, manual
from tinyqmoe.tiling.polybench import Kernel
from tinyqmoe.tiling.select import select_tiles

AUTOTUNE_SIZES = (32, 128, 512)   # per band loop, clipped to the extent; order = selection's


@dataclass
class Comparison:
    kernel: str
    params: dict
    plans: dict[str, TilePlan]                 # selected, per tiled nest
    selection_seconds: dict[str, float]        # per nest
    legality_seconds: dict[str, float]         # per nest (once per nest structure)
    untiled_s: float = float("nan")            # medians of whole-program times
    tiled_s: float = float("nan")
    autotuned_s: float = float("nan")
    interchanged_s: float = float("nan")       # selected loop order, no tiling (tiles = extents)
    autotune_plans: dict[str, TilePlan] = field(default_factory=dict)
    autotune_seconds: float = float("nan")     # wall time of the search incl. compiles
    autotune_configs: int = 0
    max_abs_diff: float = 0.0                  # tiled vs untiled outputs
    times: dict = field(default_factory=dict)  # raw per-repeat times

    @property
    def speedup(self) -> float:
        return self.untiled_s / self.tiled_s

    @property
    def vs_autotune(self) -> float:
        """Selected speed relative to the autotuned program's (> 1: selection was faster)."""
        return self.autotuned_s / self.tiled_s

    @property
    def fraction_of_best(self) -> float:
        """Selected speed as a fraction of the best speed seen (autotuned or selected)."""
        return min(self.autotuned_s, self.tiled_s) / self.tiled_s

    def to_dict(self) -> dict:
        return {
            "kernel": self.kernel, "params": self.params,
            "plans": {k: {"order": p.order, "tiles": p.tile, "footprint_bytes": p.footprint_bytes,
                          "capacity_bytes": p.capacity_bytes, "level": p.level}
                      for k, p in self.plans.items()},
            "selection_us": {k: round(v * 1e6, 1) for k, v in self.selection_seconds.items()},
            "legality_ms": {k: round(v * 1e3, 2) for k, v in self.legality_seconds.items()},
            "untiled_s": self.untiled_s, "tiled_s": self.tiled_s, "speedup": self.speedup,
            "autotuned_s": self.autotuned_s, "vs_autotune": self.vs_autotune,
            "interchanged_s": self.interchanged_s,
            "speedup_interchange_only": self.untiled_s / self.interchanged_s,
            "fraction_of_best": self.fraction_of_best,
            "autotune_plans": {k: {"order": p.order, "tiles": p.tile}
                               for k, p in self.autotune_plans.items()},
            "autotune_seconds": self.autotune_seconds, "autotune_configs": self.autotune_configs,
            "max_abs_diff": self.max_abs_diff,
        }


def fresh(kernel: Kernel, params: dict) -> dict:
    return kernel.init(params)


def select_all(kernel: Kernel, params: dict, cache, level="L2", fraction=0.5):
    plans, sel_s, leg_s = {}, {}, {}
    for nest in kernel.nests:
        if not nest.band:
            continue
        t0 = time.perf_counter()
        check_band(nest)
        leg_s[nest.name] = time.perf_counter() - t0
        select_tiles(nest, params, cache, level, fraction)  # warm numpy paths
        plan = select_tiles(nest, params, cache, level, fraction)
        plans[nest.name] = plan
        sel_s[nest.name] = plan.seconds
    return plans, sel_s, leg_s


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def autotune(kernel: Kernel, params: dict, selected: dict[str, TilePlan], progress=None,
             min_seconds: float = 0.25) -> tuple[dict[str, TilePlan], int]:
    """Best tile sizes per nest over AUTOTUNE_SIZES^band (nests timed one at a time, the
    other nests untiled), in the loop order the selection chose. Each configuration is
    timed >= 2 times and until ~min_seconds have run (median)."""
    from tinyqmoe.tiling.ir import var_ranges
    best: dict[str, TilePlan] = {}
    configs = 0
    for idx, nest in enumerate(kernel.nests):
        if nest.name not in selected:
            continue
        order = selected[nest.name].order
        ranges = var_ranges(nest, params)
        choices = []
        for v in nest.band:
            extent = ranges[v][1] - ranges[v][0] + 1
            choices.append(sorted({min(s, extent) for s in AUTOTUNE_SIZES}))
        results = []
        for combo in itertools.product(*choices):
            plan = manual(nest, dict(zip(nest.band, combo)), order=order)
            prog = Program(kernel, {nest.name: plan})
            arrays = fresh(kernel, params)
            prog.run_nest(idx, arrays, params)  # compile + warm
            first = timed(lambda: prog.run_nest(idx, arrays, params))
            repeats = int(min(15, max(1, min_seconds / max(first, 1e-6))))
            t = float(np.median([first] + [timed(lambda: prog.run_nest(idx, arrays, params))
                                           for _ in range(repeats)]))
            results.append((t, plan))
            configs += 1
            if progress is not None:
                progress.update(1)
        t, plan = min(results, key=lambda r: r[0])
        best[nest.name] = TilePlan(plan.nest, plan.band, plan.order, plan.tiles, level="autotune")
    return best, configs


def compare(kernel: Kernel, params: dict, cache, repeats: int = 3, do_autotune: bool = False,
            level: str = "L2", fraction: float = 0.5, progress: bool = False) -> Comparison:
    plans, sel_s, leg_s = select_all(kernel, params, cache, level, fraction)
    result = Comparison(kernel.name, dict(params), plans, sel_s, leg_s)
    tiled = Program(kernel, plans)
    # correctness: same outputs
    ref, out = fresh(kernel, params), fresh(kernel, params)
    kernel.untiled(*kernel.args(ref, params))
    tiled(out, params)
    result.max_abs_diff = max(float(np.max(np.abs(ref[o] - out[o]))) for o in kernel.outputs)
    scale = max(float(np.max(np.abs(ref[o]))) for o in kernel.outputs)
    if not np.isfinite(result.max_abs_diff) or result.max_abs_diff > 1e-9 * max(1.0, scale):
        raise AssertionError(f"{kernel.name}: tiled differs from untiled by {result.max_abs_diff}")
    from tinyqmoe.tiling.ir import var_ranges
    whole = {}
    for nest in kernel.nests:
        if nest.name in plans:
            ranges = var_ranges(nest, params)
            whole[nest.name] = manual(nest, {v: ranges[v][1] - ranges[v][0] + 1 for v in nest.band},
                                      order=plans[nest.name].order)
    interchanged = Program(kernel, whole)
    contenders = {"untiled": lambda a: kernel.untiled(*kernel.args(a, params)),
                  "interchanged": lambda a: interchanged(a, params),
                  "tiled": lambda a: tiled(a, params)}
    bar = None
    if do_autotune:
        if progress:
            from tinyqmoe.progress import bar as progress_bar
            bar = progress_bar(desc=f"autotune {kernel.name} tile configs", unit="cfg", leave=False)
        t0 = time.perf_counter()
        result.autotune_plans, result.autotune_configs = autotune(kernel, params, plans,
                                                                  progress=bar)
        result.autotune_seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        same = all(result.autotune_plans[k].order == p.order and result.autotune_plans[k].tiles
                   == p.tiles for k, p in plans.items())
        if not same:  # identical plans are identical code: nothing to time twice
            tuned = Program(kernel, result.autotune_plans)
            contenders["autotuned"] = lambda a: tuned(a, params)
    times = {name: [] for name in contenders}
    warm = {}
    for name, fn in contenders.items():  # warm (compile / load from cache)
        fn(fresh(kernel, params))
        arrays = fresh(kernel, params)
        warm[name] = timed(lambda: fn(arrays))
    # fast kernels get more repeats: >= `repeats`, and ~1 s of the fastest contender, <= 15
    repeats = max(repeats, min(15, int(1.0 / max(min(warm.values()), 1e-6))))
    for _ in range(repeats):
        for name, fn in contenders.items():
            arrays = fresh(kernel, params)
            times[name].append(timed(lambda: fn(arrays)))
    result.times = times
    result.untiled_s = float(np.median(times["untiled"]))
    result.tiled_s = float(np.median(times["tiled"]))
    result.interchanged_s = float(np.median(times["interchanged"]))
    if "autotuned" in times:
        result.autotuned_s = float(np.median(times["autotuned"]))
    elif do_autotune:
        result.autotuned_s = result.tiled_s
    return result
