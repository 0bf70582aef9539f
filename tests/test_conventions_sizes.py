"""One size parser for every flag, and one vocabulary for reported sizes (docs/conventions.md)."""
import json
import re

import pytest

from tinyqmoe.cli import main
from tinyqmoe.errors import UsageError
from tinyqmoe.units import parse_size, ratio_words

pytest.importorskip("transformers")
from tinymodels import save_tiny_hf_llama  # noqa: E402


@pytest.mark.parametrize("text, n", [
    ("4096", 4096), ("4096B", 4096), (4096, 4096), ("1K", 1000), ("1KB", 1000), ("1kb", 1000),
    ("1M", 10**6), ("300MB", 300 * 10**6), ("1.5GB", 15 * 10**8), ("1G", 10**9), ("2T", 2 * 10**12),
    ("1KiB", 1024), ("1MiB", 1 << 20), ("512mib", 512 << 20), ("1GiB", 1 << 30), (" 256 K ", 256000),
    ("1.9", 1),
])
def test_size_units(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "MB", "1XB", "-5MB", "0", "0.1", "1e400", "nan", "1 M B", True])
def test_bad_sizes(text):
    with pytest.raises(UsageError):
        parse_size(text, "--max-memory")


def test_ratios_are_at_least_one_and_say_their_direction():
    assert ratio_words(150, 137.5, "raw int8") == "1.09x larger than raw int8"
    assert ratio_words(100, 220, "bf16") == "2.20x smaller than bf16"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny_hf_llama(tmp_path_factory.mktemp("conv-sizes")))


def chunk_sizes(path):
    from tinyqmoe.compress.reader import open_container
    with open_container(path) as c:
        e = c.tensor("model.layers.0.mlp.down_proj.weight")  # rows of 160 int8 bytes
        return int(e.chunks["raw_size"].max()), e.shape


def test_chunk_size_reads_k_as_decimal_like_every_flag(tiny, tmp_path, capsys):
    for flag, limit in (("2K", 2000), ("2KiB", 2048)):
        out = tmp_path / f"c{flag}.tqm"
        assert main(["compress", tiny, "-o", str(out), "--codec", "raw", "--no-stats", "--chunk-size", flag]) == 0
        raw, shape = chunk_sizes(out)
        row = shape[1]
        assert raw == (limit // row) * row, (flag, raw)  # whole rows, as many as fit the decimal/binary size
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["compress", tiny, "-o", str(tmp_path / "x.tqm"), "--chunk-size", "1e400"])


def test_compress_and_inspect_speak_one_vocabulary(tiny, tmp_path, capsys):
    from tinyqmoe.compress.inspect import stored_bits_per_weight

    out = tmp_path / "lzw.tqm"
    assert main(["compress", tiny, "-o", str(out), "--codec", "lzw", "--no-stats"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # no progress bar when stderr is not a terminal
    bits = stored_bits_per_weight(out)
    assert f"{bits:.2f} bits/weight as stored (all in)" in err
    assert re.search(r"\d\.\d\dx (larger|smaller) than raw int8", err) and "x smaller than bf16" in err
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{bits:.3f} bits/weight as stored" in text
    assert not re.search(r"\b0\.\d+x", text)  # never "0.90x smaller": ratios are >= 1 with a direction
    assert main(["inspect", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    n = sum(t["n_values"] for t in d["tensors"])
    assert d["stored_bits_per_weight"] == pytest.approx(8 * out.stat().st_size / n)
    # evaluation tables and the Pareto plot report the same figure (issue 14: bits as stored, all in)
    import tinyqmoe
    from tinyqmoe.eval.spec import describe

    m = tinyqmoe.load(str(out), threads=1)
    assert describe(m)["bits_per_weight"] == pytest.approx(bits) and m.bits_per_weight < bits
    m.close()


def test_bench_reports_decimal_mb(tiny, capsys):
    assert main(["bench", tiny, "--prompt-tokens", "8", "--gen-tokens", "4", "--repeats", "1", "-t", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"peak RSS: \d+ MB$", out, re.M) and "MiB" not in out


def test_shard_size_uses_the_same_parser(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--shape", "tiny", "-o", str(out), "--shard-size", "300K", "--no-progress"]) == 0
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1 and all(p.stat().st_size <= 300_000 + 64 * 1024 for p in shards)
    capsys.readouterr()
    assert main(["synth", "--shape", "tiny", "-o", str(tmp_path / "s2"), "--shard-size", "1XB"]) == 2
    assert "--shard-size" in capsys.readouterr().err
