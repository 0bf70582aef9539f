"""The codec registry: every codec round-trips the same inputs; ids, names and bad arguments."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.compress import codecs
from tinyqmoe.compress.common import crc32
from tinyqmoe.errors import CorruptionDetected, UnsupportedParameter, UsageError

NAMES = ["raw", "lzw", "rans", "zstd", "tans"]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(NAMES))
def test_every_codec_round_trips(data, name):
    c = codecs.codec_by_name(name)
    enc = codecs.encode(name, data, max_bits=12, level=3)
    assert codecs.decode(c.id, enc, len(data)).tobytes() == data


def test_ids_and_aliases():
    assert [codecs.codec_by_name(n).id for n in NAMES] == [0, 1, 2, 3, 4]
    assert codecs.codec_by_name("ans").name == "rans"
    with pytest.raises(UsageError):
        codecs.codec_by_name("lz4")
    with pytest.raises(UnsupportedParameter):
        codecs.decode(7, b"", 0)


def test_decode_into_a_slice():
    data = np.arange(1000, dtype=np.uint8)
    out = np.zeros(3000, np.uint8)
    for name in NAMES:
        codecs.decode(codecs.codec_by_name(name).id, codecs.encode(name, data), 1000, out[1000:2000])
        assert np.array_equal(out[1000:2000], data) and not out[:1000].any() and not out[2000:].any()


def test_raw_and_zstd_size_mismatch_is_corrupt():
    with pytest.raises(CorruptionDetected):
        codecs.decode(0, b"abc", 4)
    with pytest.raises(CorruptionDetected):
        codecs.decode(3, codecs.encode("zstd", b"abcd"), 5)
    with pytest.raises(CorruptionDetected):
        codecs.decode(3, b"\x28\xb5\x2f\xfd garbage", 5)


def test_crc32_known_answers():
    assert crc32(b"") == 0 and crc32(b"123456789") == 0xCBF43926
