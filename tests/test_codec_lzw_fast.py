"""LZW decoder's fast path (runs of codes with checks hoisted, 8-byte over-copies): known answers against the
encoder's input and the first, byte-at-a-time decoder, on real int8 weights, random and structured data, the
format's edge cases, and damaged streams long enough to reach the fast path."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.compress.common import E_BAD_CODE, E_OVERFLOW, E_TRAILING, E_TRUNCATED, OK
from tinyqmoe.compress.lzw_decode import lzw_decode_core, lzw_decode_into_old, lzw_decode_scratch
from tinyqmoe.compress.lzw_encode import lzw_encode
from tinyqmoe.errors import FormatError

GUARD = 16


def decode_both(enc: bytes, raw_size: int, ent=None):
    """(status of the fast core, its output, the first decoder's output or None if it refused the stream);
    both write into buffers with a zeroed guard past raw_size, which must stay zero."""
    fast, slow = np.zeros(raw_size + GUARD, np.uint8), np.zeros(raw_size + GUARD, np.uint8)
    src = np.frombuffer(enc, np.uint8)
    status = lzw_decode_core(fast[:raw_size], src) if ent is None else lzw_decode_scratch(fast[:raw_size], src, ent)
    try:
        lzw_decode_into_old(slow[:raw_size], enc)
        ok = True
    except FormatError:
        ok = False
    assert not fast[raw_size:].any() and not slow[raw_size:].any()
    return status, fast[:raw_size], (slow[:raw_size] if ok else None)


def check_round_trip(data: np.ndarray, max_bits: int, ent=None) -> None:
    enc = lzw_encode(data, max_bits)
    status, fast, slow = decode_both(enc, data.size, ent)
    assert status == OK and slow is not None
    assert np.array_equal(fast, data) and np.array_equal(slow, data)


@pytest.mark.parametrize("max_bits", range(9, 25))
def test_random_bytes_every_code_width(max_bits):
    # weight-like: near-uniform bytes, strings of 1..4 bytes; 300 KB cross several resets at small widths
    rng = np.random.default_rng(max_bits)
    check_round_trip(rng.integers(0, 256, 300_000, dtype=np.uint8), max_bits)


@pytest.mark.parametrize("max_bits", [9, 12, 16, 24])
def test_structured_data_long_strings(max_bits):
    # long strings (> 8 bytes, the slow path's 8-byte copies), KwKwK runs, and switches between them
    rng = np.random.default_rng(1)
    parts = [np.zeros(40_000, np.uint8), np.tile(np.arange(7, dtype=np.uint8), 5000),
             rng.integers(0, 4, 50_000, dtype=np.uint8), np.full(9, 200, np.uint8),
             np.tile(rng.integers(0, 256, 37, dtype=np.uint8), 900), rng.integers(0, 256, 20_000, dtype=np.uint8)]
    check_round_trip(np.concatenate(parts), max_bits)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000])
@pytest.mark.parametrize("max_bits", [9, 16])
def test_small_chunks(n, max_bits):
    # near the ends of out and of the stream every code goes through the slow path
    rng = np.random.default_rng(n)
    check_round_trip(rng.integers(0, 3, n, dtype=np.uint8), max_bits)
    check_round_trip(rng.integers(0, 256, n, dtype=np.uint8), max_bits)


def test_dictionary_full_then_clear_many_times():
    # max_bits 9: 255 codes fill the dictionary, CLEAR follows; > 1000 resets, each followed by literals
    data = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8)
    check_round_trip(data, 9)
    check_round_trip(np.tile(np.arange(256, dtype=np.uint8), 600), 9)   # every pair new: CLEAR after 255 codes


def test_empty_chunk_is_the_max_bits_byte():
    for bits in (9, 16, 24):
        assert lzw_decode_core(np.empty(0, np.uint8), np.array([bits], np.uint8)) == OK
        assert lzw_decode_core(np.empty(0, np.uint8), np.array([bits, 0], np.uint8)) == E_TRAILING
    assert lzw_decode_core(np.empty(1, np.uint8), np.array([16], np.uint8)) == E_TRUNCATED


def test_dirty_reused_dictionary_of_the_exact_size():
    # the fused loop's buffer: raw_size + 260 entries, left full of another chunk's entries
    rng = np.random.default_rng(4)
    chunks = [rng.integers(0, 256, 200_000, dtype=np.uint8), rng.integers(0, 2, 30_000, dtype=np.uint8),
              np.zeros(5000, np.uint8), rng.integers(0, 256, 3, dtype=np.uint8)]
    ent = np.empty(max(c.size for c in chunks) + 260, np.int64)
    for bits in (12, 16, 24):
        for c in chunks:
            check_round_trip(c, bits, ent)
            ent[:] = rng.integers(-2**62, 2**62, ent.size)          # garbage left for the next chunk
    small = np.empty(chunks[0].size // 2, np.int64)                  # too small a buffer: refused, never overrun
    enc = np.frombuffer(lzw_encode(chunks[0], 24), np.uint8)
    guard = np.zeros(len(small) + 64, np.int64)
    assert lzw_decode_scratch(np.empty(chunks[0].size, np.uint8), enc, guard[:len(small)]) == E_BAD_CODE
    assert not guard[len(small):].any()


@pytest.mark.slow
@pytest.mark.parametrize("max_bits", [9, 12, 16, 20, 24])
def test_real_weights(default_gguf, max_bits):
    from tinyqmoe.compress.quant import quantize
    from tinyqmoe.compress.writer import chunk_rows
    from tinyqmoe.formats.load import open_checkpoint

    with open_checkpoint(default_gguf) as ck:
        w = ck.get("model.layers.5.mlp.down_proj.weight")
    q = np.ascontiguousarray(quantize(w, 8, None)[0].q).view(np.uint8)
    ent = np.empty(256 * 1024 + 260, np.int64)
    for r, n in list(chunk_rows(q.shape[0], q.shape[1], 256 * 1024))[:2]:
        check_round_trip(q[r:r + n].reshape(-1).copy(), max_bits, ent)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40_000), st.integers(1, 256), st.integers(0, 2**32 - 1), st.integers(0, 4),
       st.sampled_from([9, 12, 16, 24]))
def test_damaged_long_streams_agree_with_the_first_decoder(n, alphabet, seed, how, max_bits):
    # long enough for the fast path; both decoders accept exactly the same streams and write the same bytes,
    # and nothing is written past raw_size
    rng = np.random.default_rng(seed)
    data = rng.integers(0, alphabet, n, dtype=np.uint8)
    enc = bytearray(lzw_encode(data, max_bits))
    raw_size = n
    if how == 0:
        for _ in range(int(rng.integers(1, 4))):
            enc[rng.integers(1, len(enc))] ^= 1 << rng.integers(8)
    elif how == 1:
        enc = enc[: rng.integers(1, len(enc) + 1)]
    elif how == 2:
        at = int(rng.integers(1, len(enc)))
        enc[at:] = rng.integers(0, 256, len(enc) - at, dtype=np.uint8).tobytes()
    elif how == 3:
        raw_size = max(0, n + int(rng.integers(-9, 10)))
    status, fast, slow = decode_both(bytes(enc), raw_size)
    assert (status == OK) == (slow is not None)
    assert status in (OK, E_TRUNCATED, E_BAD_CODE, E_OVERFLOW, E_TRAILING)
    if slow is not None:
        assert np.array_equal(fast, slow)
