"""Quantizers: known answers, packing round trips, error reports, fp16 scales, bad arguments."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.compress.quant import (QuantizedTensor, dequantize, dequantize_int8, int_values, pack_bits, quantize,
                                     quantize_int4, quantize_int8, quantize_ternary, quantize_uint4, unpack_bits)
from tinyqmoe.errors import UsageError


def test_int8_known_answer_per_channel():
    w = np.array([[1.0, -0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    qt, err = quantize_int8(w)
    assert qt.q.dtype == np.int8 and qt.q.tolist() == [[127, -64, 32, 0], [0, 0, 0, 0]]  # -63.5 rounds to even
    assert qt.scale.shape == (2, 1) and qt.scale[0, 0] == np.float32(1 / 127) and qt.scale[1, 0] == 0
    assert qt.shape == (2, 4) and qt.qtype == "int8"
    assert 0 < err.rel_frobenius < 0.01 and err.sqnr_db > 40


def test_int8_groups_and_fp16_scales():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 128)).astype(np.float32)
    qt32, e32 = quantize_int8(w, 32)
    qt16, e16 = quantize_int8(w, 32, scale_dtype=np.float16)
    assert qt32.scale.shape == (8, 4) and qt16.scale_dtype == "f16"
    assert np.array_equal(qt16.scale, qt16.scale.astype(np.float16).astype(np.float32))  # exact in fp16
    assert abs(e16.sqnr_db - e32.sqnr_db) < 0.5
    per_channel = quantize_int8(w)[1]
    assert e32.sqnr_db > per_channel.sqnr_db         # smaller groups, smaller error


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([4, 2]), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits, o, blocks, seed):
    lo, hi = (-7, 7) if bits == 4 else (-1, 1)
    q = np.random.default_rng(seed).integers(lo, hi + 1, (o, blocks * 8)).astype(np.int8)
    p = pack_bits(q, bits)
    assert p.shape == (o, blocks * bits) and p.dtype == np.uint8
    assert np.array_equal(unpack_bits(p, bits), q)


def test_packing_known_answer():
    # first column in the lowest bits, two's complement fields
    assert pack_bits(np.array([[1, -1]], np.int8), 4).tolist() == [[0xF1]]
    assert pack_bits(np.array([[1, -1, 0, 1]], np.int8), 2).tolist() == [[0b01_00_11_01]]


def test_int4_and_ternary_error_ordering():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 256)).astype(np.float32)
    e8 = quantize_int8(w, 32)[1].sqnr_db
    q4, e4 = quantize_int4(w, 32)
    qt, et = quantize_ternary(w, 64)
    assert e8 > e4.sqnr_db > et.sqnr_db > 0
    assert q4.q.shape == (16, 128) and q4.shape == (16, 256) and q4.qtype == "int4"
    assert qt.q.shape == (16, 64) and qt.shape == (16, 256) and qt.qtype == "ternary"
    assert set(np.unique(unpack_bits(qt.q, 2))) <= {-1, 0, 1}
    v = unpack_bits(q4.q, 4)
    assert v.min() == -8 and v.max() <= 7 and np.all(q4.scale >= 0)
    # the searched scale beats max|w| / 7 on every group (and overall by ~1 dB on Gaussian weights)
    g = w.reshape(16, 8, 32).astype(np.float64)
    s7 = np.abs(g).max(2, keepdims=True) / 7
    err7 = ((np.clip(np.rint(g / s7), -7, 7) * s7 - g) ** 2).sum(2)
    err4 = ((v.reshape(16, 8, 32) * q4.scale[:, :, None] - g) ** 2).sum(2)
    assert np.all(err4 <= err7 * (1 + 1e-6))
    assert 10 * np.log10(err7.sum() / err4.sum()) > 0.5
    # dequantize agrees with the error that was reported
    d = dequantize(q4)
    rel = np.linalg.norm(w - d) / np.linalg.norm(w)
    assert abs(rel - e4.rel_frobenius) < 1e-6


def test_ternary_absmean_known_answer():
    w = np.array([[0.9, -0.1, -1.1, 0.2]], np.float32)   # mean |w| = 0.575
    qt, _ = quantize_ternary(w, 4)
    assert np.isclose(qt.scale[0, 0], 0.575)
    assert unpack_bits(qt.q, 2).tolist() == [[1, 0, -1, 0]]


def test_dequantize_matches_int8_path():
    w = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    qt, _ = quantize(w, 8, 16)
    assert np.array_equal(dequantize(qt), dequantize_int8(qt))
    assert isinstance(qt, QuantizedTensor) and qt.bits == 8


@pytest.mark.parametrize("call", [
    lambda: quantize_int8(np.zeros(4, np.float32)),
    lambda: quantize_int8(np.zeros((2, 10), np.float32), 3),
    lambda: quantize_int4(np.zeros((2, 5), np.float32), 5),
    lambda: quantize(np.zeros((2, 8), np.float32), 3),
    lambda: quantize(np.zeros((2, 8), np.float32), 8, None, "bf16"),
    lambda: quantize(np.zeros((2, 8), np.float32), qtype="uint3"),
    lambda: quantize_uint4(np.zeros((2, 5), np.float32), 5),
])
def test_bad_arguments(call):
    with pytest.raises(UsageError):
        call()


def test_blockwise_error_equals_full_error(monkeypatch):
    import tinyqmoe.compress.quant as quant

    w = np.random.default_rng(5).standard_normal((37, 64)).astype(np.float32)
    full = quant.quantize_int4(w, 16)
    monkeypatch.setattr(quant, "ROW_BLOCK_VALUES", 64 * 5)     # 5 rows per block
    blocked = quant.quantize_int4(w, 16)
    assert np.array_equal(full[0].q, blocked[0].q) and np.array_equal(full[0].scale, blocked[0].scale)
    ref = quant.quant_error(w, dequantize(full[0]))
    assert abs(blocked[1].sqnr_db - ref.sqnr_db) < 1e-6 and abs(blocked[1].rel_frobenius - ref.rel_frobenius) < 1e-9


def q4_1_grid(rng, o, i, levels=16, f16=True):
    """Weights as a llama.cpp Q4_1 file holds them, decoded as formats/gguf_dequant.py decodes them:
    per block of 32, w = d * q + m in float32, d and m fp16, q in 0..levels-1 with both ends used."""
    d = (rng.uniform(0.001, 0.05, (o, i // 32, 1))).astype(np.float16 if f16 else np.float32).astype(np.float32)
    m = (-rng.uniform(0.0, 0.4, (o, i // 32, 1))).astype(np.float16 if f16 else np.float32).astype(np.float32)
    q = rng.integers(0, levels, (o, i // 32, 32))
    q[:, :, 0], q[:, :, 1] = 0, levels - 1
    w = q.astype(np.float32) * d
    w += m
    return w.reshape(o, i)


@pytest.mark.parametrize("scale_dtype", ["f16", "f32"])
def test_uint4_gives_back_a_q4_1_grid(scale_dtype):
    """Weights on a Q4_1 grid (the default model's: every linear of its GGUF is Q4_1) come back from uint4
    exactly with fp16 scales and offsets (Q4_1's own), to float32 rounding with fp32 ones; the symmetric
    int4 grid cannot hold them."""
    w = q4_1_grid(np.random.default_rng(7), 24, 256)
    qt, err = quantize_uint4(w, 32, scale_dtype)
    assert qt.qtype == "uint4" and qt.q.shape == (24, 128) and qt.offset.shape == qt.scale.shape == (24, 8)
    v = int_values(qt)
    assert v.min() == 0 and v.max() == 15
    d = dequantize(qt)
    if scale_dtype == "f16":
        assert np.array_equal(d, w) and err.sqnr_db == float("inf")
    else:
        assert np.abs(d - w).max() <= 4 * np.finfo(np.float32).eps * np.abs(w).max() and err.sqnr_db > 120
    assert quantize_int4(w, 32)[1].sqnr_db < 25


def test_uint4_search_finds_grids_that_skip_levels_and_never_hurts():
    """A grid whose groups use only 13 of the 16 levels (as Q4_1 blocks quantized with an importance
    matrix can) comes back exactly through the search; on Gaussian weights every group's error is at most
    the min/max grid's, and uint4 beats int4 on skewed weights."""
    rng = np.random.default_rng(8)
    w = q4_1_grid(rng, 8, 128, levels=13)
    assert quantize_uint4(w, 32, "f16", search=False)[1].sqnr_db < 40
    assert np.array_equal(dequantize(quantize_uint4(w, 32, "f16")[0]), w)
    g = rng.standard_normal((16, 256)).astype(np.float32)
    plain, e_plain = quantize_uint4(g, 32, search=False)
    searched, e_search = quantize_uint4(g, 32)
    err = lambda qt: ((dequantize(qt) - g).astype(np.float64) ** 2).reshape(16, 8, 32).sum(2)   # noqa: E731
    assert np.all(err(searched) <= err(plain)) and e_search.sqnr_db > e_plain.sqnr_db + 0.3
    skewed = np.abs(g) + 0.1
    assert quantize_uint4(skewed, 32)[1].sqnr_db > quantize_int4(skewed, 32)[1].sqnr_db + 3
    # the reported error is the dequantized tensor's; a constant group is exact (scale 0, offset the value)
    assert abs(np.linalg.norm(g - dequantize(searched)) / np.linalg.norm(g) - e_search.rel_frobenius) < 1e-6
    const = np.full((2, 64), -0.75, np.float32)
    qc, ec = quantize_uint4(const, 32)
    assert np.array_equal(dequantize(qc), const) and np.all(qc.scale == 0) and ec.sqnr_db == float("inf")


def test_uint4_packing_is_unsigned_and_blockwise_equal(monkeypatch):
    import tinyqmoe.compress.quant as quant

    q = np.array([[0, 15, 8, 7]], np.int8)
    assert pack_bits(q, 4).tolist() == [[0xF0, 0x78]]
    assert unpack_bits(pack_bits(q, 4), 4, signed=False).tolist() == q.tolist()
    w = np.random.default_rng(9).standard_normal((37, 64)).astype(np.float32)
    full = quant.quantize_uint4(w, 16)
    monkeypatch.setattr(quant, "ROW_BLOCK_VALUES", 64 * 5)
    blocked = quant.quantize_uint4(w, 16)
    for f in ("q", "scale", "offset"):
        assert np.array_equal(getattr(full[0], f), getattr(blocked[0], f))
    assert abs(full[1].sqnr_db - blocked[1].sqnr_db) < 1e-6
    assert quantize(w, 4, 16, qtype="uint4")[0].qtype == "uint4" and quantize(w, 4, 16)[0].qtype == "int4"
