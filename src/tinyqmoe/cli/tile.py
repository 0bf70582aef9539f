"""`tinyqmoe tile`: tile sizes for a PolyBench kernel from the probed cache sizes, and the
speedup they give (optionally against a small exhaustive autotune)."""
from __future__ import annotations

from tinyqmoe.cli.common import add_progress_option

KERNEL_NAMES = ("gemm", "2mm", "3mm", "syrk", "syr2k", "doitgen", "trmm")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tile", help="choose tile sizes for a PolyBench kernel and measure the speedup",
        description="Select tile sizes so each tile's data footprint fits a fraction of a "
                    "measured cache level (hw.json, or a quick probe), generate the tiled "
                    "nest with constant tile sizes, compile it with numba, check it against "
                    "the untiled PolyBench loop order, and time both side by side.")
    p.add_argument("--kernel", required=True, choices=KERNEL_NAMES)
    p.add_argument("--size", default="LARGE", choices=("MEDIUM", "LARGE"),
                   help="PolyBench 4.2 dataset (default LARGE)")
    p.add_argument("--level", default="L2", choices=("L1", "L2", "L3"),
                   help="cache level the tile footprint must fit (default L2)")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="share of that level the footprint may use (default 0.5)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per version, at least (median; more for fast kernels)")
    p.add_argument("--autotune", action="store_true",
                   help="also search tile sizes {32,128,512}^band exhaustively (slow)")
    p.add_argument("--no-run", action="store_true", help="only select; do not compile or time")
    p.add_argument("--source", action="store_true", help="print the generated tiled source")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_progress_option(p)
    p.set_defaults(func=run)


def _cache_json(cache) -> dict:
    import dataclasses

    return dataclasses.asdict(cache)


def run(args) -> int:
    import json

    from tinyqmoe.errors import UsageError
    from tinyqmoe.cli.common import show_progress
    from tinyqmoe.hw import cache_sizes
    from tinyqmoe.units import format_binary as human
    from tinyqmoe.tiling.evaluate import compare, select_all
    from tinyqmoe.tiling.polybench import KERNELS

    if not 0.05 <= args.fraction <= 1.0:
        raise UsageError(f"--fraction {args.fraction}: expected 0.05..1")
    if not 1 <= args.repeats <= 50:
        raise UsageError(f"--repeats {args.repeats}: expected 1..50")
    kernel = KERNELS[args.kernel]
    params = kernel.sizes[args.size]
    cache = cache_sizes()
    if args.no_run:
        plans, sel_s, leg_s = select_all(kernel, params, cache, args.level, args.fraction)
        out = {"kernel": kernel.name, "size": args.size, "params": params,
               "cache": _cache_json(cache),
               "plans": {k: {"order": p.order, "tiles": p.tile,
                             "footprint_bytes": p.footprint_bytes,
                             "capacity_bytes": p.capacity_bytes, "level": p.level}
                         for k, p in plans.items()},
               "selection_us": {k: round(v * 1e6, 1) for k, v in sel_s.items()},
               "legality_ms": {k: round(v * 1e3, 2) for k, v in leg_s.items()}}
        if args.json:
            print(json.dumps(out, indent=1))
            return 0
        result = None
    else:
        result = compare(kernel, params, cache, repeats=args.repeats,
                         do_autotune=args.autotune, level=args.level, fraction=args.fraction,
                         progress=show_progress(args))
        plans, sel_s, leg_s = result.plans, result.selection_seconds, result.legality_seconds
        out = result.to_dict() | {"size": args.size, "cache": _cache_json(cache)}
        from tinyqmoe.tiling.codegen import Program, program_vector_widths
        prog = Program(kernel, plans)
        widths = program_vector_widths(prog, kernel.init(params), params)
        out["vector_width"] = {n.name: w for n, w in zip(kernel.nests, widths)}
        if args.json:
            print(json.dumps(out, indent=1))
            return 0
    print(f"{kernel.name} {args.size} {' '.join(f'{k}={v}' for k, v in params.items())}")
    print(f"cache    {cache.describe()}; tiles fit {args.fraction:g} x {args.level}")
    for name, plan in plans.items():
        print(f"nest     {name}: order {','.join(plan.order)}  tiles {plan.describe()}  "
              f"footprint {human(plan.footprint_bytes)} of {human(plan.capacity_bytes)}  "
              f"selection {sel_s[name] * 1e6:.0f} us  legality {leg_s[name] * 1e3:.1f} ms")
    if result is None:
        return 0
    widths = ", ".join(f"{k} {v}" for k, v in out["vector_width"].items())
    print(f"vector   <N x double> width per nest: {widths}")
    print(f"check    tiled == untiled (max |diff| {result.max_abs_diff:.1e})")
    print(f"time     untiled {result.untiled_s:.3f} s, tiled {result.tiled_s:.3f} s "
          f"(medians of {len(result.times['untiled'])}, interleaved): speedup "
          f"{result.speedup:.2f}x")
    print(f"         same loop order untiled (interchange only) {result.interchanged_s:.3f} s: "
          f"{result.untiled_s / result.interchanged_s:.2f}x; tiling on top of it "
          f"{result.interchanged_s / result.tiled_s:.2f}x")
    if args.autotune:
        tuned = "; ".join(f"{k}: {p.describe()}" for k, p in result.autotune_plans.items())
        print(f"autotune {result.autotune_configs} configs in {result.autotune_seconds:.1f} s, "
              f"best {tuned}: {result.autotuned_s:.3f} s; selected/autotuned speed "
              f"{result.vs_autotune:.2f}")
    if args.source:
        print()
        print(prog.source)
    return 0
