"""rANS: round trips, within 2% of the order-0 entropy, kernel == reference, corrupt streams fail cleanly."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.compress.common import RANS_M, read_freq_table, write_freq_table
from tinyqmoe.compress.entropy import order0_entropy_bits
from tinyqmoe.compress.rans_decode import rans_decode, rans_decode_reference
from tinyqmoe.compress.rans_encode import normalize_freqs, rans_encode, rans_encode_reference
from tinyqmoe.errors import CorruptionDetected, FormatError, TruncatedInput


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_round_trip_any_bytes(data):
    enc = rans_encode(data)
    if len(data) < 1000:
        assert enc == rans_encode_reference(data)
    assert rans_decode(enc, len(data)).tobytes() == data
    if len(data) < 300:
        assert rans_decode_reference(enc, len(data)) == data


@pytest.mark.parametrize("data", [b"", b"\x00", b"a" * 100000, bytes(range(256)), b"ab" * 3000])
def test_edge_inputs(data):
    enc = rans_encode(data)
    assert rans_decode(enc, len(data)).tobytes() == data


def test_single_symbol_costs_only_the_table():
    assert len(rans_encode(b"z" * 100000)) == 32 + 2 + 8   # bitmap, LEB128(4096), two states


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.5, 40.0))
def test_normalized_frequencies(seed, spread):
    counts = np.bincount(np.clip(np.random.default_rng(seed).normal(128, spread, 5000), 0, 255).astype(np.uint8),
                         minlength=256)
    f = normalize_freqs(counts)
    assert f.sum() == RANS_M and np.all((f > 0) == (counts > 0))
    freq, used = read_freq_table(write_freq_table(f), 1)
    assert np.array_equal(freq, f) and used == len(write_freq_table(f))


@pytest.mark.parametrize("sigma", [3.0, 12.0, 30.0])
def test_within_two_percent_of_entropy(sigma):
    # weight-like streams: int8 of a Gaussian, like quantized weights, 256 KiB
    q = np.clip(np.rint(np.random.default_rng(0).normal(0, sigma, 1 << 18)), -127, 127).astype(np.int8)
    data = q.view(np.uint8)
    bound = order0_entropy_bits(data) / 8
    size = len(rans_encode(data))
    assert bound <= size <= 1.02 * bound


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.integers(0, 2**32 - 1), st.integers(0, 2))
def test_corrupt_streams_never_crash(data, seed, how):
    enc = bytearray(rans_encode(data))
    rng = np.random.default_rng(seed)
    if how == 0:
        enc[rng.integers(len(enc))] ^= 1 << rng.integers(8)
    elif how == 1:
        enc = enc[: rng.integers(len(enc))]
    else:
        enc = bytearray(rng.integers(0, 256, len(enc)).astype(np.uint8).tobytes())
    try:
        out = rans_decode(bytes(enc), len(data))
    except FormatError:
        return
    assert out.size == len(data)


def test_corrupt_errors_are_typed():
    enc = rans_encode(b"abracadabra" * 10)
    with pytest.raises(TruncatedInput):
        rans_decode(enc[:20], 110)
    with pytest.raises(TruncatedInput):
        rans_decode(enc[:-1], 110)                # the last renormalisation byte missing
    with pytest.raises(CorruptionDetected):
        rans_decode(enc + b"\x01", 110)          # a byte after the end
    bad = bytearray(enc)
    bad[32] = 0                                  # first frequency 0
    with pytest.raises(CorruptionDetected):
        rans_decode(bytes(bad), 110)
    with pytest.raises(CorruptionDetected):
        rans_decode(enc, 0)                      # symbols present in an empty chunk


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=80), st.integers(0, 3))
def test_table_kernel_matches_the_python_parser(body, raw_size):
    from tinyqmoe.compress.rans_decode import rans_table_kernel

    # a bitmap with a few symbols, then arbitrary bytes: both parsers must agree on accept / reject and result
    bitmap = bytes([0b1001, 0, 0, 0x80] + [0] * 28)
    src = np.frombuffer(bitmap + body, np.uint8)
    slots = np.empty(RANS_M, np.uint32)
    got = rans_table_kernel(slots, src, raw_size)
    try:
        freq, used = read_freq_table(src, raw_size)
    except FormatError:
        assert got < 0
        return
    assert got == used
    if raw_size:
        assert np.array_equal(np.bincount(slots & 0xFF, minlength=256), freq)
