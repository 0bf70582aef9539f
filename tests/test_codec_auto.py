"""`--codec auto`: the fastest-decoding codec within 0.5% of the smallest (writer.auto_choice)."""
import pytest

from container_helpers import tiny_checkpoint
from tinyqmoe.compress.reader import open_container
from tinyqmoe.compress.writer import AUTO_BY_DECODE_SPEED, AUTO_SLACK, CompressOptions, auto_choice, write_container


def test_auto_choice_prefers_the_faster_codec_within_the_slack():
    assert auto_choice({"raw": 1000, "tans": 900, "rans": 899}) == "tans"      # 900 <= 1.005 * 899
    assert auto_choice({"raw": 1000, "tans": 950, "rans": 900}) == "rans"
    assert auto_choice({"raw": 1000, "tans": 1003, "zstd": 1200}) == "raw"     # incompressible stays raw
    assert auto_choice({"lzw": 10, "zstd": 10}) == "zstd"                       # speed order breaks ties
    assert AUTO_SLACK == pytest.approx(1.005) and AUTO_BY_DECODE_SPEED[0] == "raw"


def stored(path) -> dict[str, tuple[str, int]]:
    with open_container(path) as c:
        return {n: (c.tensor(n).codec, c.tensor(n).stored_bytes) for n in c.names}


def test_auto_writes_what_auto_choice_picks_from_each_codecs_size(tmp_path):
    ck = tiny_checkpoint(1)
    opts = dict(chunk_size=2048, lzw_max_bits=12, zstd_level=3, stats=False, threads=1)
    write_container(ck, tmp_path / "auto.tqm", CompressOptions(codec="auto", **opts), progress=False)
    auto = stored(tmp_path / "auto.tqm")
    each = {}
    for codec in AUTO_BY_DECODE_SPEED:
        write_container(ck, tmp_path / f"{codec}.tqm", CompressOptions(codec=codec, **opts), progress=False)
        each[codec] = stored(tmp_path / f"{codec}.tqm")
    for name, (codec, size) in auto.items():
        if len(ck.shapes[name]) == 1:
            assert codec == "raw"                                   # f32 tensors are stored raw
            continue
        sizes = {c: each[c][name][1] for c in AUTO_BY_DECODE_SPEED}
        assert codec == auto_choice(sizes) and size == sizes[codec], (name, sizes)
