"""Fuzz the .tqm reader: many random byte flips, truncations and checksum-forged payload corruptions.

  .venv/bin/python benchmarks/fuzz_container.py [--cases 5000] [--seed 0]

Each case must give exactly the original data or one of our FormatErrors (a one-line message naming the
file). Forged cases recompute every checksum after corrupting a chunk's stored bytes, so the codec decoders
themselves see the bad stream: they must raise or return the right number of bytes, never crash or hang
(each case is timed; the slowest is reported). Any other exception stops the run with a traceback.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from container_corrupt import chunk_check, read_all, rebuild, split  # noqa: E402
from container_helpers import tiny_checkpoint  # noqa: E402

from tinyqmoe.compress.writer import CompressOptions, write_container  # noqa: E402
from tinyqmoe.errors import FormatError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    tally: dict[str, int] = {}
    slowest = (0.0, "")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k, (codec, bits) in enumerate([("lzw", 8), ("rans", 8), ("zstd", 4), ("raw", 2), ("auto", 8)]):
            path = Path(tmp) / f"{codec}{bits}.tqm"
            write_container(tiny_checkpoint(k), path, CompressOptions(codec=codec, bits=bits, chunk_size=512,
                                                                      lzw_max_bits=9 + k), progress=False)
            files.append((path.read_bytes(), read_all(path)))
        bad = Path(tmp) / "bad.tqm"
        for case in range(args.cases):
            blob, expected = files[case % len(files)]
            kind = ("flip", "truncate", "forge")[int(rng.integers(3))]
            b = _mutate(blob, kind, rng)
            bad.write_bytes(b)
            t = time.perf_counter()
            try:
                got = read_all(bad)
                outcome = "same" if got == expected else "different"
                if outcome == "different" and kind != "forge":
                    raise SystemExit(f"case {case} ({kind}): silently wrong data")
            except FormatError as exc:
                assert exc.path == str(bad) and "\n" not in exc.one_line()
                outcome = type(exc).__name__
            dt = time.perf_counter() - t
            slowest = max(slowest, (dt, f"case {case} ({kind})"))
            key = f"{kind}:{outcome}"
            tally[key] = tally.get(key, 0) + 1
    for key in sorted(tally):
        print(f"{key:<34} {tally[key]:>6}")
    print(f"{args.cases} cases, no crash, no hang; slowest {slowest[0] * 1e3:.1f} ms ({slowest[1]}). "
          f"'forge:different' = a forged chunk that decodes to other bytes of the right size (only checksums "
          f"can catch that, and the forgery recomputed them).")
    return 0


def _mutate(blob: bytes, kind: str, rng) -> bytes:
    if kind == "flip":
        b = bytearray(blob)
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        return bytes(b)
    if kind == "truncate":
        return blob[: int(rng.integers(len(blob)))]
    data, index, header = split(blob)
    i = int(rng.integers(index.size))
    off, size = int(index[i]["offset"]), int(index[i]["stored_size"])
    d = bytearray(data)
    if size:
        for _ in range(int(rng.integers(1, 4))):
            d[off + int(rng.integers(size))] ^= int(rng.integers(1, 256))
    index[i]["check"] = chunk_check(data, bytes(d[off:off + size]), index[i])
    return rebuild(bytes(d), index, header)


if __name__ == "__main__":
    sys.exit(main())
