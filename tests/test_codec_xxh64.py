"""XXH64 in numba: equal to the xxhash package on every length 0..5000 class, the FORMAT.md A.7 vectors,
and callable from other numba code."""
import numpy as np
import pytest
import xxhash
from hypothesis import given, settings, strategies as st
from numba import njit

from tinyqmoe.compress.xxh64 import xxh64, xxh64_core

VECTORS = [  # docs/FORMAT.md Appendix A.7
    (b"", 0, 0xEF46DB3751D8E999), (b"", 1, 0xD5AFBA1336A3BE4B), (b"a", 0, 0xD24EC4F1A98C6E5B),
    (b"123456789", 0, 0x8CB841DB40E6AE83), (b"abc", 0, 0x44BC2CF5AD770999),
    (bytes(range(100)), 0, 0x6AC1E58032166597), (bytes(range(111)), 0, 0x666CC5E38345DE58),
    (bytes(range(111)), 0x9E3779B97F4A7C15, 0x93037167BD3783E3),
]


@pytest.mark.parametrize("data,seed,digest", VECTORS)
def test_known_answers(data, seed, digest):
    assert xxh64(data, seed) == digest == xxhash.xxh64_intdigest(data, seed)


def test_every_tail_length_matches_xxhash():
    # lengths 0..70 cover each tail case (bytes, 4-byte word, 8-byte words) below and above one 32-byte stripe
    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, 5000, dtype=np.uint8)
    for n in list(range(71)) + [4095, 4096, 4097, 4999, 5000]:
        for seed in (0, 1, 2**64 - 1):
            assert xxh64(buf[:n], seed) == xxhash.xxh64_intdigest(buf[:n].tobytes(), seed), (n, seed)


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=5000), st.integers(0, 2**64 - 1))
def test_random_inputs_match_xxhash(data, seed):
    assert xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed)


def test_unaligned_views_and_arrays():
    buf = np.arange(300, dtype=np.uint32).view(np.uint8)
    for start in range(9):
        view = buf[start:start + 257]
        assert xxh64(view) == xxhash.xxh64_intdigest(view.tobytes())


@njit(cache=True)
def _hash_chunks(buf, bounds, out):
    for i in range(bounds.size - 1):
        out[i] = xxh64_core(buf[bounds[i]:bounds[i + 1]], np.uint64(0))


def test_callable_from_numba():
    buf = np.random.default_rng(1).integers(0, 256, 10000, dtype=np.uint8)
    bounds = np.array([0, 1, 33, 1000, 10000])
    out = np.empty(4, np.uint64)
    _hash_chunks(buf, bounds, out)
    assert [int(v) for v in out] == [xxhash.xxh64_intdigest(buf[a:b].tobytes()) for a, b in zip(bounds, bounds[1:])]
