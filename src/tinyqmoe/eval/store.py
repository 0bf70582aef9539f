"""Files of a run directory: the resumable per-question jsonl, one per task, and the run settings.

  run.json                 the settings every stored record was made with (model, weights, split,
                           BOS, and per task its version and shots). A rerun with other settings is
                           refused; a rerun with more tasks adds them.
  samples_<task>.jsonl     one lm-eval `--log_samples` record per scored question (integer doc_id,
                           no header), appended and flushed as soon as it is scored. A run killed at
                           any moment loses at most the questions in flight: on restart a torn last
                           line is cut off and the questions already present are skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

from tinyqmoe.errors import UsageError
from tinyqmoe.fileio import atomic_write_text


def json_safe(x):
    """NaN and infinities (a metric over no questions) become null: strict JSON."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def stored_setting(out: Path, key: str, legacy=None):
    """A setting of the run stored in `out`: its value in run.json, `legacy` if run.json predates the
    setting (it exists without it), None if there is no run.json."""
    path = out / "run.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(key, legacy)


def check_settings(out: Path, settings: dict) -> None:
    """Refuse `out` if run.json holds other settings; add this run's tasks to it."""
    path = out / "run.json"
    stored = json.loads(path.read_text()) if path.exists() else {"tasks": {}}
    diff = [k for k in settings if k != "tasks" and k in stored and stored[k] != settings[k]]
    diff += [t for t, v in settings["tasks"].items() if stored["tasks"].get(t, v) != v]
    if diff:
        raise UsageError(f"the stored samples were made with other settings ({', '.join(diff)}); "
                         "use another --output or delete it", path=path)
    merged = {**stored, **{k: v for k, v in settings.items() if k != "tasks"},
              "tasks": {**stored["tasks"], **settings["tasks"]}}
    if merged != stored:
        atomic_write_text(path, json.dumps(merged, indent=2) + "\n")


class SampleStore:
    """Append-only jsonl of per-question records of one task, keyed by integer doc_id."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[int, dict] = {}
        self._file = None

    def open(self) -> "SampleStore":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load_existing()
        self._file = open(self.path, "a", encoding="utf-8")
        return self

    def _load_existing(self) -> None:
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1  # a torn last line (killed mid-write) is dropped
        try:
            # split on "\n" only: str.splitlines also splits on U+2028, U+0085 and the like, which
            # json.dumps(ensure_ascii=False) leaves raw inside strings (MMLU's management set has them)
            lines = raw[:good_end].decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError:
            raise UsageError("samples file is not UTF-8 (damaged?); use another --output or delete it",
                             path=self.path) from None
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line)
                self.records[int(rec["doc_id"])] = rec
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                raise UsageError(f"line {i + 1} is not a samples record (damaged, or an older format?); "
                                 "use another --output or delete the file", path=self.path) from None
        if good_end < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def __contains__(self, doc_id: int) -> bool:
        return doc_id in self.records

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(json_safe(record), ensure_ascii=False) + "\n")
        self._file.flush()
        self.records[record["doc_id"]] = record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
