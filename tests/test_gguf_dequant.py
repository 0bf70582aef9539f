"""GGML block dequantizers against gguf's reference `gguf.quants.dequantize`, bit for bit."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyqmoe.formats.gguf_dequant import CHUNK_WEIGHTS, LAYOUTS, dequantize, type_name

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

# byte offsets of each block's f16 scale fields: random bytes there could be inf/nan
F16_FIELDS = {2: (0,), 3: (0, 2), 6: (0,), 7: (0, 2), 8: (0,), 10: (80, 82), 11: (108,),
              12: (0, 2), 13: (0, 2), 14: (208,)}


def random_tensor_bytes(ggml_type: int, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """n_blocks random blocks with finite scales, as the uint8 bytes a file would hold."""
    layout = LAYOUTS[ggml_type]
    if layout.block_size == 1:  # plain floats
        x = (rng.standard_normal(n_blocks) * 3).astype(np.float32)
        as_type = {0: x, 1: x.astype(np.float16), 30: (x.view(np.uint32) >> 16).astype(np.uint16)}
        return as_type[ggml_type].view(np.uint8)
    blocks = rng.integers(0, 256, size=(n_blocks, layout.type_size), dtype=np.uint8)
    for at in F16_FIELDS[ggml_type]:
        blocks[:, at:at + 2] = (rng.standard_normal((n_blocks, 1)) * 0.1).astype(np.float16).view(np.uint8)
    return blocks.reshape(-1)


def reference(raw: np.ndarray, ggml_type: int) -> np.ndarray:
    return np.asarray(gguf.quants.dequantize(raw.reshape(1, -1), Q(ggml_type)), dtype=np.float32).reshape(-1)


def test_layout_table_matches_gguf():
    for tid, layout in LAYOUTS.items():
        assert gguf.GGML_QUANT_SIZES[Q(tid)] == (layout.block_size, layout.type_size)
        assert layout.name == Q(tid).name.lower()
    assert type_name(20) == "iq4_nl" and type_name(999) == "type 999"


@pytest.mark.parametrize("ggml_type", sorted(LAYOUTS), ids=[LAYOUTS[t].name for t in sorted(LAYOUTS)])
@settings(max_examples=8, deadline=None)
@given(n_blocks=st.integers(1, 700), seed=st.integers(0, 2**32 - 1))
def test_random_blocks_match_reference(ggml_type, n_blocks, seed):
    raw = random_tensor_bytes(ggml_type, n_blocks, np.random.default_rng(seed))
    n = n_blocks * LAYOUTS[ggml_type].block_size
    got = dequantize(raw, ggml_type, (n,))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, reference(raw, ggml_type))


@pytest.mark.parametrize("ggml_type", [0, 1, 2, 3, 6, 7, 8, 30])
def test_quantized_weights_round_trip(ggml_type):
    """Weights quantized by gguf come back as the reference reads them, close to the originals,
    over more than one chunk, in the requested 2-D shape."""
    rng = np.random.default_rng(ggml_type)
    w = rng.standard_normal((3 * CHUNK_WEIGHTS // 512 + 1, 512)).astype(np.float32)
    raw = np.asarray(gguf.quants.quantize(w, Q(ggml_type))).reshape(-1).view(np.uint8)
    got = dequantize(raw, ggml_type, w.shape)
    assert got.shape == w.shape
    np.testing.assert_array_equal(got.reshape(-1), reference(raw, ggml_type))
    rel = np.sqrt(np.mean((got - w) ** 2) / np.mean(w ** 2))
    assert rel < {0: 1e-9, 1: 1e-3, 30: 5e-3, 8: 0.01, 6: 0.06, 7: 0.06}.get(ggml_type, 0.12)


@pytest.mark.slow
def test_default_model_tensors_match_reference(default_gguf):
    from tinyqmoe.formats.gguf_reader import GGUFFile

    f = GGUFFile(default_gguf)
    seen = set()
    for name, info in f.tensors.items():
        raw = f.raw(name)
        got = dequantize(raw, info.ggml_type, info.shape)
        np.testing.assert_array_equal(got.reshape(-1), reference(raw, info.ggml_type), err_msg=name)
        seen.add(type_name(info.ggml_type))
    assert seen == {"f32", "q4_1", "q8_0"}
