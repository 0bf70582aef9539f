"""hw.json: probe results cached per CPU model in $TINYQMOE_CACHE (default ~/.cache/tinyqmoe).

{"format": "tinyqmoe-hw/1", "machines": {"<cpu model>": <ProbeResult.to_dict()>}}
Written to a temp file in the same directory, fsynced, then os.replace()d.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tinyqmoe.fileio import atomic_write_text
from tinyqmoe.errors import CorruptionDetected

FORMAT = "tinyqmoe-hw/1"


def default_path() -> Path:
    root = os.environ.get("TINYQMOE_CACHE") or Path.home() / ".cache" / "tinyqmoe"
    return Path(root) / "hw.json"


def read_all(path: Path | None = None) -> dict:
    path = Path(path or default_path())
    if not path.exists():
        return {"format": FORMAT, "machines": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptionDetected(f"unreadable probe cache ({exc}); delete it or use --refresh",
                                 path=str(path)) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(
            data.get("machines"), dict):
        raise CorruptionDetected(f"not a {FORMAT} file; delete it or use --refresh", path=str(path))
    return data


def load(cpu_model: str, path: Path | None = None):
    """The stored ProbeResult for this CPU model, or None."""
    from tinyqmoe.hw.probe import ProbeResult

    entry = read_all(path)["machines"].get(cpu_model)
    if entry is None:
        return None
    try:
        return ProbeResult.from_dict(entry)
    except (TypeError, KeyError, ValueError) as exc:
        raise CorruptionDetected(f"bad entry for {cpu_model!r} ({exc}); use --refresh",
                                 path=str(path or default_path())) from exc


def save(result, path: Path | None = None) -> bool:
    """Store `result` for its CPU model. A quick probe never replaces a full one: returns False
    (nothing written) in that case, True when written."""
    path = Path(path or default_path())
    try:
        data = read_all(path)
    except CorruptionDetected:
        data = {"format": FORMAT, "machines": {}}  # a fresh measurement replaces a broken file
    stored = data["machines"].get(result.cpu_model)
    if result.quick and isinstance(stored, dict) and not stored.get("quick", False):
        return False
    data["machines"][result.cpu_model] = result.to_dict()
    atomic_write_text(path, json.dumps(data, indent=1))
    return True
