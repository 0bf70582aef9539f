"""The .tqm container: bit-identical round trips, row-block chunks, byte accounting, atomic writes,
header contents and bad arguments."""
import json
import os
import struct

import numpy as np
import pytest

from container_helpers import tiny_checkpoint
from tinyqmoe.cli import main as cli_main
from tinyqmoe.compress import codecs
from tinyqmoe.compress.reader import open_container
from tinyqmoe.compress.writer import CompressOptions, chunk_rows, tensor_group, write_container
from tinyqmoe.compress.inspect import account, verify
from tinyqmoe.compress.container_format import QTYPES
from tinyqmoe.compress.quant import quantize
from tinyqmoe.errors import ModelNotFound, UsageError


@pytest.fixture(scope="module")
def ckpt():
    return tiny_checkpoint()


def reference_quantized(w, name, opts):
    """What the writer stores for tensor `name` under `opts` (checked options): quantized afresh."""
    qtype = opts.tensor_qtype(name)
    group = tensor_group(w.shape[1], opts.group_size, QTYPES[qtype])
    return quantize(w, group=group, scale_dtype=opts.scale_dtype, qtype=qtype)[0]


@pytest.mark.parametrize("bits,codec,scale_dtype,extra", [
    (8, "auto", "f32", {}), (8, "lzw", "f16", {}), (8, "rans", "f32", {}), (8, "zstd", "f32", {}),
    (8, "raw", "f32", {}), (4, "rans", "f32", {}), (4, "lzw", "f16", {}), (4, "raw", None, {}),
    (4, "lzw", "f32", {"symmetric": True}), (4, "raw", "f16", {"embed_bits": 4}),
    (2, "auto", "f32", {}), (2, "raw", "f16", {})])
def test_bit_identical_round_trip(tmp_path, ckpt, bits, codec, scale_dtype, extra):
    path = tmp_path / "m.tqm"
    opts = CompressOptions(bits=bits, codec=codec, chunk_size=1000, scale_dtype=scale_dtype, lzw_max_bits=10,
                           threads=2, **extra)
    write_container(ckpt, path, opts, progress=False)
    with open_container(path) as c:
        assert c.config == ckpt.config and c.tokenizer == ckpt.tokenizer and c.names == ckpt.names
        for name in c.names:
            e, w = c.tensor(name), ckpt.get(name)
            if w.ndim == 1:
                assert e.qtype == "f32" and np.array_equal(c.read_float(name), w)
                continue
            ref = reference_quantized(w, name, opts)
            qt = c.read_quantized(name)
            assert e.qtype == qt.qtype == ref.qtype and e.scale_dtype == opts.scale_dtype
            assert qt.bits == ref.bits and qt.group == ref.group and qt.q.dtype == ref.q.dtype
            assert np.array_equal(qt.q, ref.q) and np.array_equal(qt.scale, ref.scale)
            assert (qt.offset is None) == (ref.offset is None) and (qt.offset is None
                                                                     or np.array_equal(qt.offset, ref.offset))
            assert e.n_chunks > 1 or e.rows * e.row_bytes <= 1000
            if bits == 4:   # the embedding and LM head at 8 bits unless asked; scales f16 by default for uint4
                want = (("int4" if extra.get("symmetric") else "uint4") if "embed_tokens" not in name
                        and "lm_head" not in name or extra.get("embed_bits") == 4 else "int8")
                assert e.qtype == want, name
                assert scale_dtype or e.scale_dtype == "f16"
    assert verify(path)["file"] == os.path.getsize(path)


def test_chunks_are_whole_row_blocks(tmp_path, ckpt):
    path = tmp_path / "m.tqm"
    write_container(ckpt, path, CompressOptions(codec="lzw", chunk_size=700), progress=False)
    name = "mlp.down_proj.weight"
    with open_container(path) as c:
        name = "model.layers.1." + name
        e = c.tensor(name)                    # [64, 160] int8: 160-byte rows, 4 rows per 700-byte chunk
        assert e.row_bytes == 160 and [e.chunk_rows(i) for i in range(e.n_chunks)] == chunk_rows(64, 160, 700)
        q = c.read_quantized(name).q.view(np.uint8)
        for i in range(e.n_chunks):
            r, n = e.chunk_rows(i)
            assert np.array_equal(c.read_chunk(e, i), q[r:r + n])
            ch = e.chunks[i]
            with open(path, "rb") as f:                       # the index gives real file offsets (pread)
                f.seek(int(ch["offset"]))
                raw = f.read(int(ch["stored_size"]))
            out = codecs.decode(int(ch["codec"]), raw, int(ch["raw_size"]))
            assert np.array_equal(out.reshape(n, e.row_bytes), q[r:r + n])


def test_every_byte_accounted(tmp_path, ckpt):
    path = tmp_path / "m.tqm"
    write_container(ckpt, path, CompressOptions(codec="auto", chunk_size=2048), progress=False)
    with open_container(path) as c:
        parts = account(c)
        assert parts["file"] == os.path.getsize(path)
        assert sum(v for k, v in parts.items() if k != "file") == parts["file"]
        assert parts["payload"] == sum(c.tensor(n).stored_bytes for n in c.names)
        assert parts["scales"] == sum(c.tensor(n).scale_size for n in c.names)
        assert 0 < parts["padding"] < 64 * (len(c.names) * 2 + 1)


def test_header_is_a_complete_model(tmp_path, ckpt):
    path = tmp_path / "m.tqm"
    write_container(ckpt, path, CompressOptions(quantize_embeddings=False), progress=False)
    with open(path, "rb") as f:
        blob = f.read()
    magic, major, minor, flags, io, isz, jo, jsz = struct.unpack_from("<8sHHIQQQQ", blob)
    assert magic == b"TQMC\r\n\x1a\n" and (major, minor, flags) == (2, 2, 0)
    assert io % 64 == 0 and jo == io + isz and jo + jsz == len(blob) and isz % 40 == 0
    header = json.loads(blob[jo:])
    assert header["config"]["hidden_size"] == 64 and header["tokenizer"]["chat_template"]
    recs = {t["name"]: t for t in header["tensors"]}
    assert recs["model.embed_tokens.weight"]["qtype"] == "f32"        # as asked
    assert recs["lm_head.weight"]["qtype"] == "int8"
    assert recs["model.norm.weight"]["qtype"] == "f32"
    st = recs["model.layers.0.mlp.up_proj.weight"]["stats"]
    assert st["sqnr_db"] > 30 and 0 < st["entropy_bits"] and st["zstd19_bytes"] > 0
    with open_container(path) as c:
        from tokenizers import Tokenizer
        assert Tokenizer.from_str(c.tokenizer.tokenizer_json).encode("the fox").ids


def test_version_1_files_still_read_and_carry_crc32(tmp_path, ckpt):
    """Format 2.0 (XXH64 in 40-byte chunk records) is written; 1.1 (CRC-32 in 32-byte records) still reads,
    to the same tensors, and each version's chunk checksum is the one FORMAT.md names."""
    import zlib

    from tinyqmoe.compress.xxh64 import xxh64

    paths = {}
    for major in (1, 2):
        paths[major] = tmp_path / f"v{major}.tqm"
        write_container(ckpt, paths[major], CompressOptions(codec="raw", format_major=major), progress=False)
    tensors = {}
    for major, path in paths.items():
        blob = path.read_bytes()
        assert struct.unpack_from("<HH", blob, 8) == ((1, 1) if major == 1 else (2, 2))
        with open_container(path) as c:
            assert c.version[0] == major and c.checksum == ("crc32" if major == 1 else "xxh64")
            assert c.index_size == (32 if major == 1 else 40) * c.index.size
            ch = c.index[0]
            stored = blob[int(ch["offset"]):int(ch["offset"]) + int(ch["stored_size"])]
            want = zlib.crc32(stored) if major == 1 else xxh64(stored, int(ch["codec"]) + 256 * int(ch["raw_size"]))
            assert int(ch["check"]) == want
            tensors[major] = {n: c.read_payload(n).tobytes() for n in c.names if c.tensor(n).qtype != "f32"}
    assert tensors[1] == tensors[2]


def test_a_2_0_record_whose_codec_or_size_was_changed_fails_its_checksum(tmp_path, ckpt):
    """The 2.0 chunk checksum is seeded with the record's codec and decoded size (FORMAT.md §4.2), so a
    forged record with a recomputed index checksum still fails on that chunk: a codec id changed to
    another valid codec would otherwise feed one codec's bytes to another's decoder."""
    from container_corrupt import rebuild, split
    from tinyqmoe.errors import ChecksumWrong

    path = tmp_path / "m.tqm"
    write_container(ckpt, path, CompressOptions(codec="lzw"), progress=False)
    data, index, header = split(path.read_bytes())
    k = int(np.nonzero(index["codec"] == 1)[0][0])          # an LZW chunk
    index[k]["codec"] = 0                                     # claimed raw: same bytes, another decoder
    bad = tmp_path / "bad.tqm"
    bad.write_bytes(rebuild(data, index, header))
    with open_container(bad) as c:
        e = next(c.tensor(n) for n in c.names if index[k]["offset"] in c.tensor(n).chunks["offset"])
        i = int(np.nonzero(e.chunks["offset"] == index[k]["offset"])[0][0])
        with pytest.raises(ChecksumWrong):
            c.read_chunk(e, i)


class Boom(Exception):
    pass


def test_interrupted_write_leaves_nothing(tmp_path, ckpt):
    path = tmp_path / "m.tqm"
    path.write_bytes(b"previous")
    calls = []

    def get(name, _orig=ckpt.get):
        calls.append(name)
        if len(calls) == 5:
            raise Boom()
        return _orig(name)

    ckpt.get = get
    try:
        with pytest.raises(Boom):
            write_container(ckpt, path, progress=False)
    finally:
        del ckpt.get
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.tqm"]


def test_bad_options(tmp_path, ckpt):
    for opts in [CompressOptions(codec="lz4"), CompressOptions(bits=3), CompressOptions(lzw_max_bits=30),
                 CompressOptions(chunk_size=0), CompressOptions(scale_dtype="bf16")]:
        with pytest.raises(UsageError):
            write_container(ckpt, tmp_path / "x.tqm", opts, progress=False)
    with pytest.raises(UsageError):
        write_container(ckpt, tmp_path / "missing" / "x.tqm", progress=False)
    assert os.listdir(tmp_path) == []


def test_cli_bad_arguments(tmp_path, capsys):
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    cases = [
        ["compress", str(not_a_model), "-o", str(tmp_path / "a.tqm")],
        ["compress", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "a.tqm")],
        ["compress", "default", "-o", str(tmp_path / "a.tqm"), "--codec", "lz4"],
        ["compress", "default", "-o", str(tmp_path / "a.tqm"), "--bits", "3"],
        ["compress", "default", "-o", str(tmp_path / "a.tqm"), "--bits", "8", "--symmetric"],
        ["compress", "default", "-o", str(tmp_path / "a.tqm"), "--bits", "4", "--embed-bits", "5"],
        ["compress", "default", "-o", str(tmp_path / "a.tqm"), "--bits", "4", "--format-version", "1"],
        ["compress", "default", "-o", str(tmp_path / "no" / "a.tqm"), "--bits", "3"],
        ["inspect", str(not_a_model)],
        ["verify", str(tmp_path / "nothing.tqm")],
    ]
    for argv in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tinyqmoe: "), (argv, err)


def test_cli_round_trip_on_a_container(tmp_path, ckpt, capsys):
    path = tmp_path / "m.tqm"
    write_container(ckpt, path, CompressOptions(codec="rans"), progress=False)
    assert cli_main(["verify", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    assert cli_main(["inspect", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bytes"]["file"] == os.path.getsize(path) and len(out["tensors"]) == len(ckpt.names)
    assert cli_main(["inspect", str(path)]) == 0
    assert f"= {os.path.getsize(path):,}" in capsys.readouterr().out


def test_open_missing_file(tmp_path):
    with pytest.raises(ModelNotFound):
        open_container(tmp_path / "nope.tqm")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 1 << 20))
def test_chunk_rows_tile_whole_rows(rows, row_bytes, chunk_size):
    blocks = chunk_rows(rows, row_bytes, chunk_size)
    assert blocks[0][0] == 0 and sum(n for _, n in blocks) == rows
    assert all(r1 == r0 + n0 for (r0, n0), (r1, _) in zip(blocks, blocks[1:]))
    assert all(n * row_bytes <= max(chunk_size, row_bytes) for _, n in blocks)


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3000), st.sampled_from(["lzw", "rans", "zstd", "raw", "auto"]), st.sampled_from([8, 4, 2]))
def test_any_chunk_size_round_trips(tmp_path_factory, chunk_size, codec, bits):
    ck = tiny_checkpoint(3)
    path = tmp_path_factory.mktemp("h") / "m.tqm"
    write_container(ck, path, CompressOptions(bits=bits, codec=codec, chunk_size=chunk_size, lzw_max_bits=9,
                                              stats=False, threads=1), progress=False)
    name = "model.layers.0.mlp.down_proj.weight"
    with open_container(path) as c:
        e = c.tensor(name)
        w = ck.get(name)
        ref = reference_quantized(w, name, CompressOptions(bits=bits).check())
        assert np.array_equal(c.read_quantized(name).q, ref.q)
        assert e.n_chunks == len(chunk_rows(e.rows, e.row_bytes, chunk_size))


def test_uint4_container_holds_mixed_qtypes_and_offsets(tmp_path, ckpt):
    """A default 4-bit container: uint4 linears (a scale and an offset per group, both in the scales
    section, row by row: FORMAT.md §6.1), the tied embedding / LM head at int8; every tensor dequantizes
    as its QuantizedTensor does, and the offsets count in the bits per weight."""
    from tinyqmoe.compress.inspect import tensor_rows
    from tinyqmoe.compress.quant import dequantize

    path = tmp_path / "m.tqm"
    opts = CompressOptions(bits=4, codec="lzw", chunk_size=1500)
    write_container(ckpt, path, opts, progress=False)
    with open_container(path) as c:
        assert {c.tensor(n).qtype for n in c.names} == {"uint4", "int8", "f32"}
        e = c.tensor("model.layers.0.mlp.down_proj.weight")
        o, g = e.scale_shape()
        assert e.qtype == "uint4" and e.scale_dtype == "f16" and e.scale_size == o * 2 * g * 2
        so = c.read_scales(e.name)
        assert so.shape == (o, 2, g) and so.flags.c_contiguous
        assert np.array_equal(so[:, 0], c.read_scale(e.name)) and np.array_equal(so[:, 1], c.read_offset(e.name))
        assert (so[:, 1] < 0).any()                                 # offsets take either sign
        assert c.read_offset("lm_head.weight") is None
        for name in c.names:
            if c.tensor(name).qtype != "f32":
                assert np.array_equal(c.read_float(name), dequantize(c.read_quantized(name)))
        w = ckpt.get(e.name)
        assert np.abs(c.read_float(e.name) - w).max() < 0.2 * np.abs(w).max()
        row = next(r for r in tensor_rows(c) if r.name == e.name)
        assert row.bits_per_weight == pytest.approx(8 * (e.stored_bytes + o * g * 4) / (o * g * e.group))


def test_uint4_needs_format_2(tmp_path, ckpt):
    """Format 1.x readers know no uint4: a 1.x file is 4-bit only as symmetric int4."""
    with pytest.raises(UsageError, match="format version 1 has no uint4"):
        write_container(ckpt, tmp_path / "x.tqm", CompressOptions(bits=4, format_major=1), progress=False)
    write_container(ckpt, tmp_path / "y.tqm", CompressOptions(bits=4, symmetric=True, format_major=1),
                    progress=False)
    with open_container(tmp_path / "y.tqm") as c:
        assert c.version == (1, 1) and {c.tensor(n).qtype for n in c.names} == {"int4", "int8", "f32"}
    for bad in (CompressOptions(bits=8, symmetric=True), CompressOptions(bits=4, embed_bits=3)):
        with pytest.raises(UsageError):
            bad.check()


def test_uint4_records_and_offsets_are_checked(tmp_path, ckpt):
    """FORMAT.md §4.1.1 and §6.1 for uint4: the scales section must hold a scale and an offset per group
    (a record sized for scales alone is corrupt), an offset may be negative but not NaN or infinite, and
    an int4 record cannot claim the uint4 layout's size."""
    from container_corrupt import rebuild, split
    from tinyqmoe.compress.common import crc32
    from tinyqmoe.errors import CorruptionDetected

    path = tmp_path / "m.tqm"
    write_container(ckpt, path, CompressOptions(bits=4, codec="raw", scale_dtype="f32"), progress=False)
    data, index, header = split(path.read_bytes())
    name = "model.layers.1.self_attn.o_proj.weight"
    rec = next(t for t in header["tensors"] if t["name"] == name)

    def forged(blob=data, **changes):
        h = json.loads(json.dumps(header))
        next(t for t in h["tensors"] if t["name"] == name).update(changes)
        out = tmp_path / "bad.tqm"
        out.write_bytes(rebuild(blob, index, h))
        return out

    for changes in ({"scale_size": rec["scale_size"] // 2}, {"qtype": "int4"}):
        with pytest.raises(CorruptionDetected, match="scale_size"):
            open_container(forged(**changes))
    # a NaN offset (the section's crc recomputed): refused when the scales are read
    so, ss = rec["scale_offset"], rec["scale_size"]
    section = np.frombuffer(data[so:so + ss], "<f4").copy()
    g = section.size // (2 * rec["rows"])
    section[g + 1] = np.nan                                     # row 0, offset of group 1
    blob = data[:so] + section.tobytes() + data[so + ss:]
    with open_container(forged(blob, scale_crc32=crc32(section.tobytes()))) as c:
        with pytest.raises(CorruptionDetected, match="infinite or NaN"):
            c.read_scales(name)
        assert c.read_scale("model.layers.0.self_attn.o_proj.weight").shape == (64, 2)
    # a negative uint4 scale (format 2.2: a Q4_0 block's d) is read as it is; an int8 one is corrupt
    section = np.frombuffer(data[so:so + ss], "<f4").copy()
    section[0] = -abs(section[0])                               # row 0, scale of group 0
    blob = data[:so] + section.tobytes() + data[so + ss:]
    with open_container(forged(blob, scale_crc32=crc32(section.tobytes()))) as c:
        assert c.read_scale(name)[0, 0] == section[0] < 0
    int8 = next(t for t in header["tensors"] if t["qtype"] == "int8")
    so, ss = int8["scale_offset"], int8["scale_size"]
    section = np.frombuffer(data[so:so + ss], "<f4").copy()
    section[0] = -1.0
    h = json.loads(json.dumps(header))
    next(t for t in h["tensors"] if t["name"] == int8["name"])["scale_crc32"] = crc32(section.tobytes())
    out = tmp_path / "neg8.tqm"
    out.write_bytes(rebuild(data[:so] + section.tobytes() + data[so + ss:], index, h))
    with open_container(out) as c, pytest.raises(CorruptionDetected, match="negative"):
        c.read_scales(int8["name"])
