"""`--codec auto`: the fastest-decoding codec within 0.5% of the smallest (writer._choose_streams)."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinyqmoe.compress import codecs
from tinyqmoe.compress.writer import AUTO_BY_DECODE_SPEED, AUTO_SLACK, CompressOptions, _choose_streams


def choose(payload: np.ndarray, qtype: str = "int8"):
    opts = CompressOptions(codec="auto", lzw_max_bits=12, zstd_level=3).check()
    blocks = [(r, min(64, payload.shape[0] - r)) for r in range(0, payload.shape[0], 64)]
    with ThreadPoolExecutor(2) as pool:
        return _choose_streams({"qtype": qtype}, payload, blocks, opts, pool)


def test_weight_like_payload_picks_the_fast_entropy_coder():
    q = np.clip(np.rint(np.random.default_rng(0).normal(0, 20, (256, 512))), -127, 127).astype(np.int8)
    name, streams, sizes = choose(q.view(np.uint8))
    assert set(sizes) == set(AUTO_BY_DECODE_SPEED)
    smallest = min(sizes.values())
    # the first codec in decode-speed order within the slack, and its streams decode to the payload
    assert name == next(n for n in AUTO_BY_DECODE_SPEED if sizes[n] <= AUTO_SLACK * smallest)
    assert sizes[name] < sizes["raw"]
    c = codecs.codec_by_name(name)
    rows = q.view(np.uint8)
    assert all(np.array_equal(codecs.decode(c.id, s, 64 * 512), rows[64 * i:64 * (i + 1)].reshape(-1))
               for i, s in enumerate(streams))


def test_incompressible_payload_stays_raw():
    payload = np.random.default_rng(1).integers(0, 256, (128, 512), dtype=np.uint8)
    name, _, sizes = choose(payload)
    assert name == "raw" and sizes["raw"] <= AUTO_SLACK * min(sizes.values())


def test_f32_tensors_are_raw():
    payload = np.random.default_rng(2).normal(size=(8, 16)).astype(np.float32).view(np.uint8)
    name, _, sizes = choose(payload, "f32")
    assert name == "raw" and list(sizes) == ["raw"]
