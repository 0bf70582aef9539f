"""Time to open the default GGUF and dequantize every tensor: tinyqmoe beside gguf-py's reference.

    .venv/bin/python benchmarks/gguf_load.py [path.gguf] [--repeats 3]

Side by side in one process (best of --repeats): open = header + metadata (+ tokenizer and config for
tinyqmoe), dequantize = every tensor to float32. gguf-py: GGUFReader + gguf.quants.dequantize.
"""
from __future__ import annotations

import argparse
import time


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path", nargs="?")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import gguf

    from tinyqmoe.assets import model_path
    from tinyqmoe.formats.load_gguf import open_gguf

    path = args.path or str(model_path("default"))
    ck = open_gguf(path)
    reader = gguf.GGUFReader(path)
    n = sum(t.n_elements for t in reader.tensors)
    rows = [
        ("tinyqmoe open_gguf", best_of(args.repeats, lambda: open_gguf(path))),
        ("gguf GGUFReader", best_of(args.repeats, lambda: gguf.GGUFReader(path))),
        ("tinyqmoe get() all", best_of(args.repeats, lambda: [ck.get(k) for k in ck.names])),
        ("gguf dequantize all", best_of(args.repeats, lambda: [gguf.quants.dequantize(t.data, t.tensor_type)
                                                              for t in reader.tensors])),
    ]
    print(f"{path}: {len(reader.tensors)} tensors, {n / 1e6:.1f} M weights")
    for name, s in rows:
        print(f"{name:22s} {s:7.3f} s" + (f"  {n / s / 1e6:6.0f} M weights/s" if "all" in name else ""))


if __name__ == "__main__":
    main()
