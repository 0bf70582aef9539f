"""The compiled fused loop (weights/fused_loop.py): its decoders and widening agree with the reader's,
and a bad chunk gives the reader's own typed error."""
import numpy as np
import pytest

from tinyqmoe.compress import codecs
from tinyqmoe.compress.quant import pack_bits, unpack_bits
from tinyqmoe.weights.fused_loop import E_TERNARY, HAVE_ZSTD, decode_core, widen_fields

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("name", ["raw", "lzw", "rans", "tans"] + (["zstd"] if HAVE_ZSTD else []))
def test_decode_core_equals_the_codec(name):
    data = np.clip(RNG.normal(0, 20, 5000), -127, 127).astype(np.int8).view(np.uint8)
    stream = np.frombuffer(codecs.encode(name, data), np.uint8)
    out = np.zeros(data.size, np.uint8)
    ent = np.empty(data.size + 260, np.int64)
    assert decode_core(codecs.codec_by_name(name).id, out, stream, ent) == 0
    assert np.array_equal(out, data)
    bad = stream.copy()
    bad[len(bad) // 2] ^= 0x5A                      # no checksum here: the decoder itself must not crash
    decode_core(codecs.codec_by_name(name).id, out, bad, ent)
    assert decode_core(codecs.codec_by_name(name).id, out, stream[: len(stream) // 2], ent) != 0


@pytest.mark.parametrize("bits", [4, 2])
def test_widen_fields_equals_unpack_bits(bits):
    lo = -1 if bits == 2 else -7
    q = RNG.integers(lo, -lo + 1, size=(6, 64)).astype(np.int8)
    packed = pack_bits(q, bits)
    out = np.empty(q.size, np.int8)
    assert widen_fields(out, packed.reshape(-1), bits)
    assert np.array_equal(out.reshape(q.shape), unpack_bits(packed, bits))
    if bits == 2:
        packed = packed.reshape(-1).copy()
        packed[5] = (packed[5] & 0xF3) | (0b10 << 2)
        assert not widen_fields(out, packed, 2)
    assert E_TERNARY < 0
