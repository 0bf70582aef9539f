"""The long fuzz campaign of issue 12: >= 2,000 crafted inputs across .tqm, HF and GGUF and every source.

  PYTHONPATH=src .venv/bin/python benchmarks/fuzz_campaign.py --cases 2400 [--seed 0] [--log]

Prints the outcome table that docs/robustness.md records (Markdown) and every bad case as a JSON line;
exits 1 if any case ended in a traceback, a signal, a hang or a silent wrong output. The cases and the
runner live in tests/fuzz_models.py and tests/fuzz_runner.py; `make test` runs the first 240.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuzz_runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--cases", "2400"]))
