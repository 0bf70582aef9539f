"""Every codec round-trips real int8 weight streams of the default model (fetched once into the cache)."""
import numpy as np
import pytest

from tinyqmoe.compress import codecs
from tinyqmoe.compress.writer import chunk_rows
from tinyqmoe.compress.entropy import order0_entropy_bits
from tinyqmoe.compress.quant import quantize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_chunks(default_gguf):
    from tinyqmoe.formats.load import open_checkpoint

    with open_checkpoint(default_gguf) as ck:
        w = ck.get("model.layers.3.self_attn.k_proj.weight")          # [192, 576]
    out = {}
    for bits in (8, 4, 2):
        q = np.ascontiguousarray(quantize(w, bits, {8: None, 4: 32, 2: 64}[bits])[0].q).view(np.uint8)
        out[bits] = [q[r:r + n].reshape(-1).copy() for r, n in chunk_rows(q.shape[0], q.shape[1], 64 * 1024)]
    return out


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("name,params", [("lzw", {"max_bits": 12}), ("lzw", {"max_bits": 16}), ("rans", {}),
                                         ("tans", {}), ("zstd", {"level": 3}), ("raw", {})])
def test_real_streams_round_trip(real_chunks, bits, name, params):
    c = codecs.codec_by_name(name)
    for chunk in real_chunks[bits]:
        enc = c.encode(chunk, **params)
        assert codecs.decode(c.id, enc, chunk.size).tobytes() == chunk.tobytes()
        if name in ("rans", "tans"):
            assert len(enc) <= 1.02 * order0_entropy_bits(chunk) / 8 + 300   # + the table
