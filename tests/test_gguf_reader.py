"""The GGUF container reader: agrees with gguf.GGUFReader; truncated or corrupt files give one typed error."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gguf_tiny import gguf_layout, tiny_hf_llama, write_llama_gguf
from tinyqmoe.errors import (CorruptionDetected, FormatError, ModelNotFound, TinyQMoEError, TruncatedInput,
                             UnsupportedParameter)
from tinyqmoe.formats.gguf_reader import GGUFFile
from tinyqmoe.formats.load_gguf import open_gguf

gguf = pytest.importorskip("gguf")

TOKENIZER = {"tokenizer_model": "gpt2", "tokenizer_pre": "default",
             "token_list": ["<s>", "a", "b", "ab", "\u0120", "\u0120ab"], "token_merges": ["a b", "\u0120 ab"],
             "token_types": [3, 1, 1, 1, 1, 1], "bos_token_id": 0, "chat_template": "{{ x }}"}


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    cfg, sd = tiny_hf_llama(tie=False)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_llama_gguf(path, cfg, gguf_layout(cfg, sd), qtype=gguf.GGMLQuantizationType.Q8_0, tokenizer=TOKENIZER)
    return path


def same_as_gguf_reader(path):
    mine, ref = GGUFFile(path), gguf.GGUFReader(path)
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        want, got = field.contents(), mine.metadata[key]
        if isinstance(got, np.ndarray):
            got = got.tolist()
        assert got == pytest.approx(want) if isinstance(want, float) else got == want, key
    assert len(mine.metadata) == len(ref.fields) - 3
    assert list(mine.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        info = mine.tensors[t.name]
        assert info.dims == tuple(int(d) for d in t.shape) and info.ggml_type == int(t.tensor_type)
        assert info.nbytes == t.n_bytes and info.shape == tuple(int(d) for d in reversed(t.shape))
        np.testing.assert_array_equal(mine.raw(t.name), np.asarray(t.data).reshape(-1).view(np.uint8))


def test_agrees_with_gguf_reader(tiny_file):
    same_as_gguf_reader(tiny_file)


@pytest.mark.slow
def test_agrees_with_gguf_reader_on_default_model(default_gguf):
    same_as_gguf_reader(default_gguf)


def test_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(ModelNotFound, match="no such file"):
        GGUFFile(tmp_path / "nope.gguf")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(TruncatedInput, match="empty.gguf"):
        GGUFFile(tmp_path / "empty.gguf")
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(CorruptionDetected, match="not a GGUF file"):
        GGUFFile(tmp_path / "x.gguf")


@pytest.mark.parametrize("version", [1, 4, 3 << 24])
def test_unsupported_versions(tmp_path, tiny_file, version):
    data = bytearray(tiny_file.read_bytes())
    data[4:8] = version.to_bytes(4, "little")
    (tmp_path / "v.gguf").write_bytes(bytes(data))
    with pytest.raises(UnsupportedParameter, match=f"version {version}"):
        GGUFFile(tmp_path / "v.gguf")


def test_truncation_anywhere_is_one_typed_error(tmp_path, tiny_file):
    data = tiny_file.read_bytes()
    f = GGUFFile(tiny_file)
    last = max(i.offset + i.nbytes for i in f.tensors.values())
    cuts = sorted({8, 20, 23, 30, 100, 1000, f.data_start - 1, f.data_start + 5, last - 1, *range(24, 400, 37)})
    for cut in cuts:
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        with pytest.raises(TruncatedInput) as err:
            open_gguf(p)
        assert str(err.value).startswith(str(p)) and "\n" not in str(err.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 2200), st.integers(1, 255)), min_size=1, max_size=4))
def test_corrupt_header_bytes_never_escape_as_tracebacks(tmp_path, tiny_file, flips):
    data = bytearray(tiny_file.read_bytes())
    for at, xor in flips:
        data[at] ^= xor
    p = tmp_path / "flipped.gguf"
    p.write_bytes(bytes(data))
    try:
        ck = open_gguf(p)
        for name in ck.names:
            ck.get(name)
    except TinyQMoEError as exc:
        assert "\n" not in str(exc) and str(p) in str(exc)
        if isinstance(exc, FormatError):
            assert isinstance(exc, (TruncatedInput, CorruptionDetected, UnsupportedParameter))
