"""Run crafted inputs through load / generate / verify in worker subprocesses, and count what happens.

One worker process runs many cases (start-up once); the parent sends it one case at a time and waits at
most `timeout` seconds. A worker that dies is a `signal` (heap corruption aborts, segfaults), one that
does not answer in time is a `hang`; both are restarted. Outcomes per case:

  error       a TinyQMoEError whose message is one line (what the CLI prints, exit 2): correct
  ran         loaded and generated (and, for `same` cases, the baseline's tokens): correct
  traceback   any other exception (or a multi-line message)
  signal      the worker died
  hang        no answer within the timeout
  wrong       a `refuse` case ran (or `verify` accepted it), or a `same` case gave other tokens

    python tests/fuzz_runner.py --cases 300 --seed 0      # prints the table; exit 1 on a bad outcome
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BAD = ("traceback", "signal", "hang", "wrong")
MODES = ("resident", "streamed", "fused", "memory")   # memory: a float checkpoint quantized in RAM, no cache
PROMPT = "the quick brown"
N_TOKENS = 4


# ---- the worker side

def _run_one(req: dict) -> dict:
    import tinyqmoe
    from tinyqmoe.errors import TinyQMoEError

    out: dict = {"tokens": None, "error": None, "verify": None}
    try:
        mode = req["mode"]
        kw = dict(threads=1)
        if mode == "memory":
            kw["cache"] = False
        else:
            kw["source"] = mode
        m = tinyqmoe.load(req["path"], **kw)
        try:
            ids = m.tokenizer.encode(PROMPT)
            out["tokens"] = list(m.stream_ids(ids, max_new_tokens=N_TOKENS))
            m.tokenizer.encode_chat([{"role": "user", "content": "hi"}])     # the chat template renders too
        finally:
            m.close()
    except TinyQMoEError as exc:
        out["error"] = exc.one_line()
    except Exception as exc:   # noqa: BLE001 - the point is to catch what should not happen
        out["traceback"] = f"{type(exc).__name__}: {exc}"[:300]
    if req["fmt"] == "tqm" and "traceback" not in out:
        from tinyqmoe.compress.inspect import verify

        try:
            verify(req["path"], threads=1)
            out["verify"] = "ok"
        except TinyQMoEError as exc:
            out["verify"] = exc.one_line()
        except Exception as exc:   # noqa: BLE001
            out["traceback"] = f"verify: {type(exc).__name__}: {exc}"[:300]
    return out


def worker() -> int:
    """Read one JSON request per line on stdin, answer one JSON line on the original stdout."""
    sys.path.insert(0, str(HERE))
    answer = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)   # nothing else may write to the answer channel
    for line in sys.stdin:
        answer.write(json.dumps(_run_one(json.loads(line))) + "\n")
        answer.flush()
    return 0


# ---- the parent side

class Worker:
    def __init__(self, env: dict):
        self.env = env
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, text=True)

    def ask(self, req: dict, timeout: float) -> tuple[str, dict | None]:
        """('ok', answer) | ('signal', None) | ('hang', None)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            return "hang", None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return "signal", {"code": code}
        return "ok", json.loads(line)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def classify(case, mode: str, status: str, ans: dict | None, baselines: dict) -> tuple[str, str]:
    """(outcome, detail) of one case."""
    if status != "ok":
        return status, json.dumps(ans) if ans else ""
    if "traceback" in ans:
        return "traceback", ans["traceback"]
    for key in ("error", "verify"):
        if ans.get(key) and ans[key] != "ok" and "\n" in ans[key]:
            return "traceback", f"{key}: a multi-line message"
    if case.expect == "refuse":
        if ans["tokens"] is not None:
            return "wrong", "accepted by load"
        if ans.get("verify") == "ok":
            return "wrong", "accepted by verify"
        return "error", ans["error"]
    if ans["tokens"] is None:
        return "error", ans["error"]
    if case.expect == "same" and ans["tokens"] != baselines[(case.base, mode)]:
        return "wrong", f"tokens {ans['tokens']} != baseline {baselines[(case.base, mode)]}"
    return "ran", ""


def run_campaign(n_cases: int, seed: int = 0, timeout: float = 60.0, first: int = 0, log=None) -> dict:
    """Build and run cases first..first+n_cases-1. Returns {"table": {(category, outcome): n}, "bad": [...]}."""
    from fuzz_models import bases, baseline_paths, make_case

    table: collections.Counter = collections.Counter()
    bad = []
    with tempfile.TemporaryDirectory(prefix="tinyqmoe-fuzz-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, TINYQMOE_CACHE=str(tmp / "cache"), PYTHONPATH=os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]))
        w = Worker(env)
        try:
            b = bases(seed)
            baselines = {}
            for base, path in baseline_paths(b, tmp / "base").items():
                for mode in MODES:
                    if base.startswith("tqm") and mode == "memory":
                        continue
                    status, ans = w.ask({"path": path, "fmt": base.split("-")[0], "mode": mode}, timeout)
                    if status != "ok" or ans["tokens"] is None:
                        raise SystemExit(f"baseline {base} {mode} failed: {status} {ans}")
                    baselines[(base, mode)] = ans["tokens"]
            for k in range(first, first + n_cases):
                case = make_case(k, seed, b, tmp / f"case{k}")
                mode = MODES[(k // 3) % (3 if case.fmt == "tqm" else 4)]
                status, ans = w.ask({"path": case.path, "fmt": case.fmt, "mode": mode}, timeout)
                outcome, detail = classify(case, mode, status, ans, baselines)
                table[(case.category, outcome)] += 1
                table[(f"{case.fmt}:*{mode}", outcome)] += 1
                if outcome in BAD:
                    bad.append(dict(k=case.k, category=case.category, mode=mode, what=case.what, outcome=outcome,
                                    detail=detail))
                if log:
                    print(f"{k:5d} {case.category:<18} {mode:<9} {case.expect:<6} {outcome:<9} {case.what[:60]} "
                          f"{detail[:100]}", file=log, flush=True)
                _remove(tmp / f"case{k}")
        finally:
            w.close()
    return {"table": table, "bad": bad}


def _remove(d: Path) -> None:
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def format_table(table: dict) -> str:
    outcomes = ("error", "ran", "traceback", "signal", "hang", "wrong")
    cats = sorted({c for c, _ in table if ":*" not in c}) + sorted({c for c, _ in table if ":*" in c})
    lines = [f"| input | cases | {' | '.join(outcomes)} |", "|---|---:|" + "---:|" * len(outcomes)]
    for c in cats:
        row = [table.get((c, o), 0) for o in outcomes]
        label = c.replace(":*", ": source ")
        lines.append(f"| {label} | {sum(row)} | " + " | ".join(str(v) for v in row) + " |")
    total = [sum(v for (c, o), v in table.items() if o == out and ":*" not in c) for out in outcomes]
    lines.append(f"| **all** | {sum(total)} | " + " | ".join(str(v) for v in total) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cases", type=int, default=300)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a case is a hang (default 60)")
    p.add_argument("--log", action="store_true", help="one line per case on stderr")
    args = p.parse_args(argv)
    if args.worker:
        return worker()
    sys.path.insert(0, str(HERE))
    t0 = time.perf_counter()
    r = run_campaign(args.cases, args.seed, args.timeout, args.first, sys.stderr if args.log else None)
    print(format_table(r["table"]))
    print(f"\n{args.cases} cases (seed {args.seed}) in {time.perf_counter() - t0:.0f} s")
    for b in r["bad"]:
        print(json.dumps(b))
    return 1 if r["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
