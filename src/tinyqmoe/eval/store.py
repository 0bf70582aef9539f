"""Files of a run: the resumable per-question jsonl and atomic writes of reports.

A samples file starts with one header line {"header": {...run settings...}} and then holds one
record per scored question, appended and flushed as soon as it is scored. A run killed at any
moment loses at most the question in flight: on restart the header must match (same model,
task, split, shots...), a torn last line is cut off, and the questions already present are skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

from tinyqmoe.errors import UsageError


def json_safe(x):
    """NaN and infinities (a metric over no questions) become null: strict JSON."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


class SampleStore:
    """Append-only jsonl of per-question records for one (model, task, split, shots) run."""

    def __init__(self, path: str | Path, header: dict):
        self.path = Path(path)
        self.header = header
        self.records: dict[str, dict] = {}
        self._file = None

    def open(self) -> "SampleStore":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load_existing()
        else:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"header": self.header}) + "\n")
        self._file = open(self.path, "a", encoding="utf-8")
        return self

    def _load_existing(self) -> None:
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1  # a torn last line (killed mid-write) is dropped
        try:
            self._read_lines(raw[:good_end])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise UsageError(f"samples file is damaged ({type(exc).__name__}: {str(exc)[:80]}); delete it "
                             f"to start over", path=self.path) from None
        if good_end < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def _read_lines(self, raw: bytes) -> None:
        lines = raw.decode("utf-8").splitlines()
        if not lines:
            raise UsageError("samples file has no header line; delete it to start over", path=self.path)
        header = json.loads(lines[0]).get("header")
        if header != self.header:
            diff = sorted(k for k in set(header or {}) | set(self.header)
                          if (header or {}).get(k) != self.header.get(k))
            raise UsageError(f"samples file was made with other settings ({', '.join(diff)}); "
                             "use another --output or delete it", path=self.path)
        for line in lines[1:]:
            rec = json.loads(line)
            self.records[rec["doc_id"]] = rec

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.records

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
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
