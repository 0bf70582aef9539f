"""The fused decode path (kernels.layer via kernels.decode) against the readable forward pass."""
import numpy as np
import pytest

from tinyqmoe.kernels.decode import FusedDecode
from tinyqmoe.model.checkpoint import MemoryCheckpoint, expected_tensors
from tinyqmoe.model.config import PRESETS
from tinyqmoe.model.forward import RunState, forward
from tinyqmoe.model.weights import weights_from_checkpoint

IDS = [5, 17, 200, 3, 99, 42, 7, 250, 11, 64, 128, 1, 77, 150, 33, 290, 8, 8, 8, 19]


def random_weights(group, tie, seed=0):
    """int8 weights of a random tiny Llama (GQA 4/2 heads) whose logits are far from zero."""
    import dataclasses

    cfg = dataclasses.replace(PRESETS["tiny"], tie_embeddings=tie)
    rng = np.random.default_rng(seed)
    tensors = {name: ((1.0 + 0.1 * rng.standard_normal(shape)) if len(shape) == 1
                      else 0.08 * rng.standard_normal(shape)).astype(np.float32)
               for name, shape in expected_tensors(cfg).items()}
    return cfg, weights_from_checkpoint(MemoryCheckpoint(cfg, tensors), "int8", group)


@pytest.mark.parametrize("group, tie", [(None, False), (32, True)])
def test_fused_decode_equals_forward(group, tie):
    cfg, w = random_weights(group, tie)
    fused = FusedDecode(w, cfg)
    s_ref, s_fast = RunState(cfg, capacity=4), RunState(cfg, capacity=4)  # growth while decoding
    for token in IDS:
        ref = forward(w, s_ref, [token])
        fast = fused.step(s_fast, [token])
        np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert s_fast.pos == s_ref.pos == len(IDS)
    for l in range(cfg.n_layers):
        np.testing.assert_allclose(s_fast.k[l][:, : len(IDS)], s_ref.k[l][:, : len(IDS)], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s_fast.v[l][:, : len(IDS)], s_ref.v[l][:, : len(IDS)], rtol=1e-4, atol=1e-5)


def test_fused_short_prompt_then_greedy_tokens_identical():
    cfg, w = random_weights(None, False, seed=1)
    fused = FusedDecode(w, cfg, max_tokens=8)
    s_ref, s_fast = RunState(cfg), RunState(cfg)
    ref = forward(w, s_ref, IDS[:7], all_logits=True)
    fast = fused.step(s_fast, IDS[:7])
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    t_ref = t_fast = int(ref[-1].argmax())
    ref_stream, fast_stream = [], []
    for _ in range(24):
        ref_stream.append(t_ref)
        fast_stream.append(t_fast)
        t_ref = int(forward(w, s_ref, [t_ref])[0].argmax())
        t_fast = int(fused.step(s_fast, [t_fast])[0].argmax())
    assert fast_stream == ref_stream
    assert len(set(ref_stream)) > 2  # the stream is not a constant
