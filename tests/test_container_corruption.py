"""Corrupt containers give exactly the right data or one of our clean errors: never a crash, a hang,
a huge allocation or silently wrong weights. (A larger run: benchmarks/fuzz_container.py.)"""
import numpy as np
import pytest

from container_corrupt import read_all, rebuild, split
from container_helpers import tiny_checkpoint
from tinyqmoe.cli import main as cli_main
from tinyqmoe.compress.writer import CompressOptions, write_container
from tinyqmoe.errors import (ChecksumWrong, CorruptionDetected, FormatError, TruncatedInput,
                             UnsupportedParameter)
from tinyqmoe.model.config import LlamaConfig

SMALL = LlamaConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=48, max_seq_len=64,
                    tie_embeddings=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A ~20 KB container mixing codecs (auto), with its expected decoded contents."""
    path = tmp_path_factory.mktemp("c") / "small.tqm"
    ck = tiny_checkpoint(1, SMALL)
    ck.tokenizer.tokenizer_json = '{"model": {}}'     # keep the JSON header small: flips hit the data more
    write_container(ck, path, CompressOptions(codec="auto", chunk_size=300, lzw_max_bits=9), progress=False)
    return path, path.read_bytes(), read_all(path)


def outcome(tmp_path, blob, expected):
    p = tmp_path / "bad.tqm"
    p.write_bytes(blob)
    try:
        got = read_all(p)
    except FormatError as exc:
        assert exc.path == str(p) and "\n" not in exc.one_line()
        return type(exc).__name__
    assert got == expected, "silently wrong data"
    return "same"


def test_random_byte_flips(tmp_path, small):
    path, blob, expected = small
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(300):
        b = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        kind = outcome(tmp_path, bytes(b), expected)
        seen[kind] = seen.get(kind, 0) + 1
    assert seen.get("ChecksumWrong", 0) > 200, seen


def test_truncations_and_extensions(tmp_path, small):
    path, blob, expected = small
    rng = np.random.default_rng(1)
    cuts = sorted({0, 1, 63, 64, len(blob) - 1, *rng.integers(0, len(blob), 100).tolist()})
    for n in cuts:
        assert outcome(tmp_path, blob[:n], expected) in ("TruncatedInput", "CorruptionDetected", "ChecksumWrong")
    assert outcome(tmp_path, blob + b"\0", expected) == "CorruptionDetected"


def _mut_header(fn):
    def apply(data, index, header):
        fn(header)
        return rebuild(data, index, header)
    return apply


def _mut_index(fn):
    def apply(data, index, header):
        fn(index)
        return rebuild(data, index, header)
    return apply


def _t(h, k=1):
    return h["tensors"][k]


FORGERIES = {
    "shape grows": (_mut_header(lambda h: _t(h).update(shape=[10**6, 32])), CorruptionDetected),
    "huge shape": (_mut_header(lambda h: _t(h).update(shape=[2**30, 2**30], rows=2**30)), UnsupportedParameter),
    "bad group": (_mut_header(lambda h: _t(h).update(group=5)), CorruptionDetected),
    "unknown qtype": (_mut_header(lambda h: _t(h).update(qtype="int3")), UnsupportedParameter),
    "scale outside": (_mut_header(lambda h: _t(h).update(scale_offset=2**40)), CorruptionDetected),
    "scale misaligned": (_mut_header(lambda h: _t(h).update(scale_offset=_t(h)["scale_offset"] + 1)),
                         CorruptionDetected),
    "chunk range": (_mut_header(lambda h: _t(h).update(first_chunk=_t(h)["first_chunk"] + 1)), CorruptionDetected),
    "n_chunks": (_mut_header(lambda h: _t(h).update(n_chunks=10**9)), CorruptionDetected),
    "wrong type": (_mut_header(lambda h: _t(h).update(rows="many")), CorruptionDetected),
    "bool as int": (_mut_header(lambda h: _t(h).update(group=True)), CorruptionDetected),
    "duplicate name": (_mut_header(lambda h: _t(h).update(name=h["tensors"][0]["name"])), CorruptionDetected),
    "no tensors": (_mut_header(lambda h: h.pop("tensors")), CorruptionDetected),
    "bad config": (_mut_header(lambda h: h["config"].update(hidden_size=-4)), CorruptionDetected),
    "format": (_mut_header(lambda h: h.update(format="gguf")), CorruptionDetected),
    "chunk offset": (_mut_index(lambda ix: ix[3].__setitem__("offset", 2**60)), CorruptionDetected),
    "chunk size": (_mut_index(lambda ix: ix[3].__setitem__("stored_size", 2**31)), CorruptionDetected),
    "raw size": (_mut_index(lambda ix: ix[3].__setitem__("raw_size", 7)), CorruptionDetected),
    "row order": (_mut_index(lambda ix: ix[3].__setitem__("row_start", 1)), CorruptionDetected),
    "codec id": (_mut_index(lambda ix: ix[3].__setitem__("codec", 9)), UnsupportedParameter),
    "reserved": (_mut_index(lambda ix: ix[3]["reserved"].__setitem__(0, 1)), CorruptionDetected),
    "chunk crc": (_mut_index(lambda ix: ix[3].__setitem__("check", ix[3]["check"] ^ 1)), ChecksumWrong),
    "codec swap": (_mut_index(lambda ix: ix.__setitem__("codec", np.where(ix["codec"] == 0, 3, 0))), FormatError),
}


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_fields_with_valid_checksums(tmp_path, small, name):
    path, blob, expected = small
    mutate, error = FORGERIES[name]
    data, index, header = split(blob)
    bad = mutate(data, index, header)
    p = tmp_path / "forged.tqm"
    p.write_bytes(bad)
    with pytest.raises(error) as info:
        read_all(p)
    assert info.value.path == str(p)


def test_bad_json_and_header_fields(tmp_path, small):
    path, blob, expected = small
    data, index, header = split(blob)
    for js, err in [(b"[1, 2]", CorruptionDetected), (b"\xff\xfe{}", CorruptionDetected), (b"{", CorruptionDetected)]:
        p = tmp_path / "j.tqm"
        p.write_bytes(rebuild(data, index, header, js))
        with pytest.raises(err):
            read_all(p)
    # a newer major version is unsupported, a flag is corrupt (checksums fixed up)
    from tinyqmoe.compress.common import crc32
    for offset, value, err in [(8, 3, UnsupportedParameter), (12, 1, CorruptionDetected)]:
        b = bytearray(blob)
        b[offset] = value
        b[60:64] = crc32(bytes(b[:60])).to_bytes(4, "little")
        p = tmp_path / "v.tqm"
        p.write_bytes(bytes(b))
        with pytest.raises(err):
            read_all(p)
    p = tmp_path / "short.tqm"
    p.write_bytes(blob[:10])
    with pytest.raises(TruncatedInput):
        read_all(p)


def test_cli_reports_corruption_in_one_line(tmp_path, small, capsys):
    path, blob, expected = small
    b = bytearray(blob)
    b[200] ^= 0xFF
    p = tmp_path / "flip.tqm"
    p.write_bytes(bytes(b))
    assert cli_main(["verify", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(p) in err[0]
