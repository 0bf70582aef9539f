"""LZW: kernel == plain-Python reference, round trips on the hard cases, corrupt streams fail cleanly."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.compress.lzw_decode import lzw_decode, lzw_decode_reference
from tinyqmoe.compress.lzw_encode import lzw_encode, lzw_encode_reference
from tinyqmoe.errors import CorruptionDetected, FormatError, TruncatedInput, UsageError


def codes_of(stream: bytes, n_codes: int) -> list[int]:
    """The first n_codes codes of a stream, following the width rule of FORMAT.md §7.1."""
    pos, acc, nacc, d, width, prev, out = 1, 0, 0, 257, 9, False, []
    while len(out) < n_codes:
        while (1 << width) < d + prev:
            width += 1
        while nacc < width:
            acc |= stream[pos] << nacc
            pos, nacc = pos + 1, nacc + 8
        k, acc, nacc = acc & ((1 << width) - 1), acc >> width, nacc - width
        out.append(k)
        if k == 256:
            d, width, prev = 257, 9, False
        elif prev:
            d += 1
        else:
            prev = True
    return out


def round_trip(data: bytes, max_bits: int) -> bytes:
    enc = lzw_encode(data, max_bits)
    assert enc == lzw_encode_reference(data, max_bits)
    assert lzw_decode(enc, len(data)).tobytes() == data
    assert lzw_decode_reference(enc, len(data)) == data
    return enc


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([9, 10, 12, 16, 24]))
def test_round_trip_any_bytes(data, max_bits):
    round_trip(data, max_bits)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5000), st.integers(1, 4), st.integers(0, 2**32 - 1), st.sampled_from([9, 10, 11]))
def test_round_trip_low_entropy_crosses_resets(n, alphabet_bits, seed, max_bits):
    data = np.random.default_rng(seed).integers(0, 1 << alphabet_bits, n).astype(np.uint8).tobytes()
    round_trip(data, max_bits)


@pytest.mark.parametrize("max_bits", range(9, 25))
def test_each_code_width(max_bits):
    rng = np.random.default_rng(max_bits)
    data = rng.integers(0, 3, 20000).astype(np.uint8).tobytes() + bytes(5000) + bytes(range(256)) * 4
    round_trip(data, max_bits)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff", b"a" * 100000, b"ab" * 5000, b"aaaaaaa"])
def test_edge_inputs(data):
    enc = round_trip(data, 12)
    if data == b"":
        assert enc == b"\x0c"


def test_kwkwk_codes():
    # "aaaaaaa" -> a, aa (KwKwK: code 257 used as soon as it is defined), aaa (again), a
    assert codes_of(lzw_encode(b"aaaaaaa", 12), 4) == [97, 257, 258, 97]


def test_exact_dictionary_fill_then_clear():
    # 0,1,...,255 then 0,1,..: each pair is new, so 255 codes fill codes 257..511 (max_bits 9) -> CLEAR
    data = bytes(range(256)) * 2
    enc = round_trip(data, 9)
    codes = codes_of(enc, 258)
    assert codes[:255] == list(range(255)) and codes[255] == 256 and codes[256] == 255


def test_long_run_is_small():
    assert len(lzw_encode(bytes(1 << 20), 16)) < 4000


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_corrupt_streams_never_crash(data, seed, how):
    enc = bytearray(lzw_encode(data, 10))
    rng = np.random.default_rng(seed)
    if how == 0:
        enc[rng.integers(len(enc))] ^= 1 << rng.integers(8)
    elif how == 1:
        enc = enc[: rng.integers(len(enc))]
    elif how == 2:
        enc += bytes([rng.integers(1, 256)])
    else:
        enc = bytearray(rng.integers(0, 256, len(enc)).astype(np.uint8).tobytes())
    raw_size = len(data) + (int(rng.integers(-2, 3)) if how == 3 else 0)
    try:
        out = lzw_decode(bytes(enc), max(raw_size, 0))
    except FormatError:
        return
    assert out.size == max(raw_size, 0)   # a flip the format cannot see (e.g. a literal changed): checksums catch it


def test_corrupt_errors_are_typed():
    with pytest.raises(TruncatedInput):
        lzw_decode(b"", 1)
    with pytest.raises(CorruptionDetected):
        lzw_decode(b"\x08\x00", 1)              # max_bits 8 is not allowed
    enc = lzw_encode(b"hello world", 12)
    with pytest.raises(TruncatedInput):
        lzw_decode(enc[:-2], 11)
    with pytest.raises(CorruptionDetected):
        lzw_decode(enc + b"\x00", 11)           # a byte after the end
    with pytest.raises(CorruptionDetected):
        lzw_decode(enc, 5)                      # more output than raw_size
    with pytest.raises(UsageError):
        lzw_encode(b"x", 25)


def test_many_resets_wrap_the_generation_tag():
    # max_bits 9 resets every 255 codes; random bytes give ~1 code per byte: > 255 resets in 120 KB
    data = np.random.default_rng(7).integers(0, 256, 120_000).astype(np.uint8).tobytes()
    enc = round_trip(data, 9)
    assert len(enc) > 120_000
