"""`tinyqmoe probe`: cache sizes from latency probes, next to what the OS states."""
from __future__ import annotations

from tinyqmoe.cli.common import add_progress_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help="measure L1/L2/L3 from memory latency vs working set",
        description="Time dependent loads (triangular walk + pointer chase, compiled) over a "
                    "geometric grid of working sets, find the latency knees, and compare them "
                    "with the sizes the OS states. Results are cached per CPU model in "
                    "$TINYQMOE_CACHE/hw.json.")
    p.add_argument("--refresh", action="store_true", help="re-measure even if hw.json has a result")
    p.add_argument("--quick", action="store_true", help="shorter grid (to 16 MiB), 3 repeats")
    p.add_argument("--max-mib", type=float, default=None,
                   help="grid top in MiB (default 64; implies --refresh)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per size (implies --refresh)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--plot", metavar="PNG", default=None, help="write latency-vs-size plot here")
    p.add_argument("--curve", action="store_true", help="also print the latency of every size")
    add_progress_option(p)
    p.set_defaults(func=run)


def format_table(result, source: str) -> str:
    from tinyqmoe.units import format_binary as human

    lines = [f"cpu      {result.cpu_model}",
             f"pages    transparent huge pages: {result.thp_mode}; probe buffers got "
             f"{human(result.huge_page_bytes)} of huge pages",
             f"source   {source}, measured {result.measured_at} in {result.seconds:.1f} s"
             f"{' (quick)' if result.quick else ''}",
             "",
             f"{'level':<6}{'estimate':>11}{'triangular':>12}{'chase':>11}{'OS (sysfs)':>12}"
             f"{'est/OS':>8}"]
    tri = list(result.knees_triangular) + [None] * 3
    chase = list(result.knees_chase) + [None] * 3
    for i, (name, est) in enumerate((("L1", result.l1), ("L2", result.l2), ("L3", result.l3))):
        os_size = result.os_sizes.get(name)
        ratio = f"{est / os_size:.2f}" if est and os_size else "-"
        cells = [human(v) if v else "-" for v in (est, tri[i], chase[i], os_size)]
        lines.append(f"{name:<6}{cells[0]:>11}{cells[1]:>12}{cells[2]:>11}{cells[3]:>12}{ratio:>8}")
    if result.lscpu:
        lines.append("lscpu    " + ", ".join(f"{k} {v}" for k, v in result.lscpu.items()))
    lines.append("knees are the last working set before latency climbs: expected to under-"
                 "estimate (shared caches); the OS column is for comparison only")
    return "\n".join(lines)


def run(args) -> int:
    import dataclasses
    import json

    from tinyqmoe.errors import UsageError
    from tinyqmoe.hw import probe_cached, store
    from tinyqmoe.cli.common import info, show_progress
    from tinyqmoe.hw.plot import plot_probe
    from tinyqmoe.units import format_binary as human
    from tinyqmoe.hw.probe import FULL, QUICK, run_probe

    if args.max_mib is not None or args.repeats is not None:
        cfg = QUICK if args.quick else FULL
        if args.max_mib is not None:
            if not 0.0625 <= args.max_mib <= 65536:
                raise UsageError(f"--max-mib {args.max_mib}: expected 0.0625..65536")
            top = int(args.max_mib * (1 << 20))
            cfg = dataclasses.replace(cfg, max_bytes=top, tri_max_bytes=min(cfg.tri_max_bytes, top))
        if args.repeats is not None:
            if not 1 <= args.repeats <= 100:
                raise UsageError(f"--repeats {args.repeats}: expected 1..100")
            cfg = dataclasses.replace(cfg, repeats=args.repeats)
        result = run_probe(cfg, progress=show_progress(args), quick=args.quick)
        store.save(result)
        fresh = True
    else:
        result, fresh = probe_cached(refresh=args.refresh, quick=args.quick, progress=show_progress(args))
    source = "fresh probe" if fresh else f"cached in {store.default_path()}"
    if fresh:
        kept = store.load(result.cpu_model)
        if kept is not None and kept.measured_at != result.measured_at:
            source += f", not stored: {store.default_path()} keeps the full probe of {kept.measured_at}"
            info(args, "probe: a quick probe never replaces a full one in hw.json")
    if args.plot:
        plot_probe(result, args.plot)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    print(format_table(result, source))
    if args.curve:
        print(f"\n{'working set':>12}{'triangular ns':>15}{'chase ns':>10}")
        for s, a, b in zip(result.sizes, result.triangular_ns, result.chase_ns):
            print(f"{human(s):>12}{a:>15.2f}{b:>10.2f}")
    if args.plot:
        print(f"plot     {args.plot}")
    return 0
