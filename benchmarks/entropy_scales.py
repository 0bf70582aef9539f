"""Order-0 entropy of the default model's int8 weights (every 2-D weight) under three scale layouts.

  .venv/bin/python benchmarks/entropy_scales.py

Finer scales spread the values over the whole int8 range (more entropy, less error); one scale per tensor
leaves most weights near 0 (less entropy, more error). No lossless coder beats these bounds at order 0.
"""
import numpy as np
from tinyqmoe.formats.load import open_checkpoint
from tinyqmoe.compress.entropy import order0_entropy_bits
from tinyqmoe.compress.quant import quantize_int8
ck = open_checkpoint("default")
tot = {"per-channel": 0.0, "per-group-32": 0.0, "per-tensor": 0.0}; n = 0
for name in ck.names:
    if len(ck.shapes[name]) != 2: continue
    w = ck.get(name); n += w.size
    tot["per-channel"] += order0_entropy_bits(quantize_int8(w)[0].q.view(np.uint8))
    tot["per-group-32"] += order0_entropy_bits(quantize_int8(w, 32)[0].q.view(np.uint8))
    s = np.abs(w).max() / 127
    tot["per-tensor"] += order0_entropy_bits(np.clip(np.rint(w / s), -127, 127).astype(np.int8).view(np.uint8))
for k, v in tot.items(): print(f"{k}: {v / n:.3f} bits/weight order-0 entropy")
