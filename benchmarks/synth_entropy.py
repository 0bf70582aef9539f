"""Order-0 entropy of int8 weights (symmetric, one scale per output channel) of models, per tensor kind.

  .venv/bin/python benchmarks/synth_entropy.py default /tmp/synth-1b

Compares a synthetic model (`tinyqmoe synth`) with a trained one: the synthetic recipes aim at the
default model's histograms. Reads one tensor at a time (peak memory ~ the largest tensor in float32).
"""
import sys

import numpy as np

from tinyqmoe.compress.entropy import order0_entropy_bits
from tinyqmoe.compress.quant import quantize_int8
from tinyqmoe.formats.load import open_checkpoint

for path in sys.argv[1:] or ["default"]:
    ck = open_checkpoint(path)
    bits, n, kinds = 0.0, 0, {}
    for name in ck.names:
        if len(ck.shapes[name]) != 2:
            continue
        w = ck.get(name)
        h = order0_entropy_bits(quantize_int8(w)[0].q.view(np.uint8))
        bits, n = bits + h, n + w.size
        k = kinds.setdefault(name.split(".")[-2], [0.0, 0])
        k[0], k[1] = k[0] + h, k[1] + w.size
    print(f"{path}: {bits / n:.3f} bits/weight over {n} weights;",
          ", ".join(f"{kind} {b / m:.2f}" for kind, (b, m) in kinds.items()))
