"""The numba cores `(out, src) -> status` of every codec: the same bytes as decode_into, callable from another
numba function (as the fused reader calls them), and statuses (not crashes) on corrupt input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import njit

from tinyqmoe.compress import codecs
from tinyqmoe.compress.common import E_LIBRARY, E_TRAILING, E_TRUNCATED, OK
from tinyqmoe.compress.lzw_decode import lzw_decode_core, lzw_decode_into_old
from tinyqmoe.compress.lzw_encode import lzw_encode
from tinyqmoe.compress.rans_decode import rans_decode_core
from tinyqmoe.compress.tans_decode import tans_decode_core
from tinyqmoe.compress.zstd_decode import zstd_decode_core
from tinyqmoe.errors import FormatError

CORES = {"lzw": lzw_decode_core, "rans": rans_decode_core, "tans": tans_decode_core, "zstd": zstd_decode_core}


@njit   # not cache=True: numba's cache keys a dispatcher argument by its type, and once the index holds
# entries of dispatchers from earlier processes a lookup can hit one whose object has vanished
# (ReferenceError: seen in a dev tree after many runs)
def _decode_all(core, out, src, src_bounds, out_bounds, status):
    # what the fused reader does: walk chunks inside numba, one core call each
    for i in range(src_bounds.size - 1):
        status[i] = core(out[out_bounds[i]:out_bounds[i + 1]], src[src_bounds[i]:src_bounds[i + 1]])


@pytest.mark.parametrize("name", sorted(CORES))
def test_cores_run_inside_numba(name):
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, k, n, dtype=np.uint8) for k, n in ((3, 1000), (256, 5000), (40, 70000), (1, 9))]
    streams = [codecs.encode(name, c, max_bits=12, level=3) for c in chunks]
    src = np.frombuffer(b"".join(streams), np.uint8)
    src_bounds = np.cumsum([0] + [len(s) for s in streams])
    out_bounds = np.cumsum([0] + [c.size for c in chunks])
    out = np.empty(out_bounds[-1], np.uint8)
    status = np.full(len(chunks), 99, np.int64)
    _decode_all(CORES[name], out, src, src_bounds, out_bounds, status)
    assert list(status) == [OK] * len(chunks)
    assert np.array_equal(out, np.concatenate(chunks))


def test_core_of_registry():
    for name, core in CORES.items():
        assert codecs.core_of(codecs.codec_by_name(name).id) is core
    assert codecs.core_of(0) is None


def test_zstd_core_statuses():
    import zstandard

    data = np.arange(5000, dtype=np.uint32).view(np.uint8)
    frame = np.frombuffer(zstandard.ZstdCompressor(level=3).compress(data.tobytes()), np.uint8)
    out = np.empty(data.size, np.uint8)
    assert zstd_decode_core(out, frame) == OK and np.array_equal(out, data)
    assert zstd_decode_core(out[:-1], frame) == E_LIBRARY                     # raw_size differs
    assert zstd_decode_core(out, frame[:-3]) == E_LIBRARY                     # truncated
    assert zstd_decode_core(out, np.concatenate([frame, frame[:1]])) == E_LIBRARY   # a byte after the frame
    no_size = np.frombuffer(zstandard.ZstdCompressor(write_content_size=False).compress(b"abc"), np.uint8)
    assert zstd_decode_core(np.empty(3, np.uint8), no_size) == E_LIBRARY      # size not announced


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=600), st.integers(0, 2**32 - 1), st.integers(0, 3), st.sampled_from([9, 12, 16]))
def test_lzw_core_agrees_with_the_first_decoder(data, seed, how, max_bits):
    # on valid and damaged streams alike, the fast core and the byte-at-a-time kernel accept the same streams
    # and write the same bytes
    enc = bytearray(lzw_encode(data, max_bits))
    rng = np.random.default_rng(seed)
    if how == 0:
        enc[rng.integers(len(enc))] ^= 1 << rng.integers(8)
    elif how == 1:
        enc = enc[: rng.integers(1, len(enc) + 1)]
    elif how == 2:
        enc[1:] = rng.integers(0, 256, len(enc) - 1, dtype=np.uint8).tobytes()
    guard = 16
    fast, slow = np.zeros(len(data) + guard, np.uint8), np.zeros(len(data) + guard, np.uint8)
    status = lzw_decode_core(fast[:len(data)], np.frombuffer(bytes(enc), np.uint8))
    try:
        lzw_decode_into_old(slow[:len(data)], bytes(enc))
        ok = True
    except FormatError:
        ok = False
    assert (status == OK) == ok
    if ok:
        assert np.array_equal(fast, slow)
    assert not fast[len(data):].any()                  # nothing written past raw_size, even when over-copying


def test_cores_reject_trailing_and_truncated():
    data = np.frombuffer(b"the quick brown fox jumps over the lazy dog" * 50, np.uint8)
    for name in ("lzw", "rans", "tans"):
        enc = np.frombuffer(codecs.encode(name, data, max_bits=12), np.uint8)
        out = np.empty(data.size, np.uint8)
        assert CORES[name](out, enc) == OK and np.array_equal(out, data)
        assert CORES[name](out, np.concatenate([enc, np.ones(1, np.uint8)])) == E_TRAILING
        assert CORES[name](out, enc[:-2]) < 0
        assert CORES[name](out, enc[:0]) == E_TRUNCATED


def test_zstd_without_libzstd_uses_the_package(monkeypatch):
    import zstandard

    from tinyqmoe.compress import zstd_decode
    from tinyqmoe.errors import CorruptionDetected

    monkeypatch.setattr(zstd_decode, "LIBZSTD", None)
    data = np.arange(3000, dtype=np.uint16).view(np.uint8)
    frame = zstandard.ZstdCompressor(level=3).compress(data.tobytes())
    out = np.empty(data.size, np.uint8)
    zstd_decode.zstd_decode_into(out, frame)
    assert np.array_equal(out, data)
    with pytest.raises(CorruptionDetected):
        zstd_decode.zstd_decode_into(out[:-1], frame)
    with pytest.raises(CorruptionDetected):
        zstd_decode.zstd_decode_into(out, frame[:-4])


def test_lzw_scratch_dictionary_reused_across_chunks():
    from tinyqmoe.compress.common import E_BAD_CODE
    from tinyqmoe.compress.lzw_decode import lzw_decode_scratch

    rng = np.random.default_rng(5)
    ent = np.full(1 << 16, -1, np.int64)                  # one buffer, dirty from the previous chunk
    for n, k, bits in ((5000, 4, 12), (70000, 200, 16), (300, 2, 9), (0, 2, 16)):
        data = rng.integers(0, k, n, dtype=np.uint8)
        enc = np.frombuffer(lzw_encode(data, bits), np.uint8)
        out = np.empty(n, np.uint8)
        assert lzw_decode_scratch(out, enc, ent) == OK and np.array_equal(out, data)
    enc = np.frombuffer(lzw_encode(b"abcabc", 12), np.uint8)
    assert lzw_decode_scratch(np.empty(6, np.uint8), enc, np.empty(100, np.int64)) == E_BAD_CODE
