"""tANS: round trips, within 0.5% of the order-0 entropy, kernel == plain-Python reference, the spread ==
its definition, corrupt streams give typed errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.compress.common import E_BAD_STATE, E_TRAILING, OK, TANS_R, normalize_freqs
from tinyqmoe.compress.entropy import order0_entropy_bits
from tinyqmoe.compress.tans_decode import tans_decode, tans_decode_core, tans_decode_reference
from tinyqmoe.compress.tans_encode import tans_encode
from tinyqmoe.errors import CorruptionDetected, FormatError, TruncatedInput


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_round_trip_any_bytes(data):
    enc = tans_encode(data)
    assert tans_decode(enc, len(data)).tobytes() == data
    if len(data) < 500:
        assert tans_decode_reference(enc, len(data)) == data


@pytest.mark.parametrize("data", [b"", b"\x00", b"a" * 100000, bytes(range(256)), b"ab" * 3000,
                                  bytes(range(256)) * 300 + b"x" * 7])
def test_edge_inputs(data):
    assert tans_decode(tans_encode(data), len(data)).tobytes() == data


def test_single_symbol_costs_the_table_and_the_states():
    assert len(tans_encode(b"z" * 100000)) == 32 + 2 + 16     # bitmap, LEB128(4096), 8 states, no bits


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.3, 60.0))
def test_state_table_follows_the_spec(seed, spread):
    # FORMAT.md §7.3.1, written out in plain Python: the step spread, then k, nb and base per state
    from tinyqmoe.compress.tans_decode import tans_table_kernel

    counts = np.bincount(np.clip(np.random.default_rng(seed).normal(128, spread, 5000), 0, 255).astype(np.uint8),
                         minlength=256)
    freq = normalize_freqs(counts)
    table = np.empty(TANS_R, np.uint32)
    tans_table_kernel(table, freq)
    symbols, p = [0] * TANS_R, 0
    for s, f in enumerate(freq):
        for _ in range(int(f)):
            symbols[p] = s
            p = (p + 2563) % TANS_R
    k_next = [int(f) for f in freq]
    for u, s in enumerate(symbols):
        k = k_next[s]
        k_next[s] += 1
        nb = 12 - (k.bit_length() - 1)
        assert int(table[u]) == nb | s << 8 | ((k << nb) - TANS_R) << 16


@pytest.mark.parametrize("sigma", [3.0, 12.0, 30.0])
def test_within_half_a_percent_of_entropy(sigma):
    # weight-like streams: int8 of a Gaussian, 256 KiB; bound includes the table
    q = np.clip(np.rint(np.random.default_rng(0).normal(0, sigma, 1 << 18)), -127, 127).astype(np.int8)
    data = q.view(np.uint8)
    bound = order0_entropy_bits(data) / 8
    assert bound <= len(tans_encode(data)) <= 1.005 * bound


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=600), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_corrupt_streams_never_crash(data, seed, how):
    enc = bytearray(tans_encode(data))
    rng = np.random.default_rng(seed)
    raw_size = len(data)
    if how == 0:
        enc[rng.integers(len(enc))] ^= 1 << rng.integers(8)
    elif how == 1:
        enc = enc[: rng.integers(len(enc))]
    elif how == 2:
        enc += rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
    else:
        raw_size += int(rng.integers(-3, 4))
    try:
        out = tans_decode(bytes(enc), max(raw_size, 0))
    except FormatError:
        return
    assert out.size == max(raw_size, 0)       # a flip the format cannot see: the chunk checksum catches it


def test_hostile_streams_stay_in_bounds():
    # random bytes after a valid table, every length: the core returns a status, never reads or writes outside
    rng = np.random.default_rng(3)
    table = tans_encode(bytes(range(256)))[:32 + 256]      # bitmap + 256 one-byte frequencies (16 each)
    for n in range(0, 300, 7):
        src = np.frombuffer(table + rng.integers(0, 256, n, dtype=np.uint8).tobytes(), np.uint8)
        out = np.zeros(n * 3 + 1, np.uint8)
        assert tans_decode_core(out[:-1], src) <= 0 and out[-1] == 0


def test_corrupt_errors_are_typed():
    data = b"abracadabra" * 10
    enc = tans_encode(data)
    with pytest.raises(TruncatedInput):
        tans_decode(enc[:20], len(data))
    with pytest.raises(TruncatedInput):
        tans_decode(enc[:50], len(data))           # states cut
    with pytest.raises(FormatError):
        tans_decode(enc[:-1], len(data))           # the last bit-stream byte missing
    with pytest.raises(CorruptionDetected):
        tans_decode(enc + b"\x00", len(data))      # a byte after the end
    bad = bytearray(enc)
    bad[42 + 1] = 0x10                             # lane 0's state 0x1000 = R: out of range
    with pytest.raises(CorruptionDetected):
        tans_decode(bytes(bad), len(data))
    with pytest.raises(CorruptionDetected):
        tans_decode(enc, 0)                        # symbols present in an empty chunk
    with pytest.raises(FormatError):
        tans_decode(enc, len(data) + 1)            # one byte too many: bits run out or a lane ends off 0


@pytest.mark.parametrize("alphabet", [2, 17, 256])
def test_fast_path_known_answers_every_length(alphabet):
    # the fast loop (whole rounds of 8, bit position kept in the low byte of a sum of table entries) against
    # the plain-Python reference, for lengths around the round, refill and batch boundaries and the tail
    rng = np.random.default_rng(alphabet)
    for n in list(range(0, 70)) + [127, 128, 129, 1000, 4095, 4096, 4097, 20_001]:
        data = rng.integers(0, alphabet, n, dtype=np.uint8).tobytes()
        enc = tans_encode(data)
        assert tans_decode(enc, n).tobytes() == data == tans_decode_reference(enc, n)


@settings(max_examples=100, deadline=None)
@given(st.integers(200, 6000), st.integers(0, 2**32 - 1), st.integers(1, 5))
def test_damaged_bit_streams_decode_like_the_reference(n, seed, flips):
    # flips in the bit stream change symbols, not bounds: whenever the bits last to the end (the status is
    # then OK, or final states off 0, or bits left over), the core wrote the reference decoder's bytes; and
    # nothing is written past raw_size
    rng = np.random.default_rng(seed)
    data = np.clip(np.rint(rng.normal(0, 20, n)), -127, 127).astype(np.int8).view(np.uint8).tobytes()
    enc = bytearray(tans_encode(data))
    start = len(enc) - (len(enc) - 32) // 2                 # somewhere in the bit stream
    for _ in range(flips):
        enc[rng.integers(start, len(enc))] ^= 1 << rng.integers(8)
    out = np.zeros(n + 16, np.uint8)
    status = tans_decode_core(out[:n], np.frombuffer(bytes(enc), np.uint8))
    assert status <= 0 and not out[n:].any()
    if status in (OK, E_BAD_STATE, E_TRAILING):
        assert out[:n].tobytes() == tans_decode_reference(bytes(enc), n)
