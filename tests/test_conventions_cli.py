"""docs/conventions.md through the command line: aliases, no abbreviations, stop messages, quiet,
options that are errors rather than silently ignored, --version, shell completion."""
import os
import subprocess
import sys

import pytest

from tinyqmoe.cli import main

pytest.importorskip("transformers")
from tinymodels import save_tiny_hf_llama  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny_hf_llama(tmp_path_factory.mktemp("conv-cli")))


@pytest.fixture(scope="module")
def tqm(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv-tqm") / "tiny.tqm"
    assert main(["compress", tiny, "-o", str(out), "--codec", "raw", "--no-stats", "-q"]) == 0
    return str(out)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"tinyqmoe {__import__('tinyqmoe').__version__}"


@pytest.mark.parametrize("prefix", ["--temperatur", "--thread", "--max-new", "--ctx"])
def test_abbreviations_are_rejected(tiny, capsys, prefix):
    with pytest.raises(SystemExit) as e:
        main(["generate", tiny, "-p", "x", prefix, "1"])
    assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_llama_cpp_aliases_mean_the_long_options(tiny, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The capital")
    long = cli(capsys, "generate", tiny, "--prompt", "The capital", "--max-new-tokens", 6, "--temperature", 0.9,
               "--seed", 4, "--threads", 1, "--context", 64, "--top-k", 20)
    short = cli(capsys, "generate", "-m", tiny, "-f", prompt, "-n", 6, "--temp", 0.9, "-s", 4, "-t", 1, "-c", 64,
                "--top-k", 20)
    other = cli(capsys, "generate", tiny, "-p", "The capital", "--n-predict", 6, "--temp", 0.9, "-s", 4,
                "-t", 1, "--ctx-size", 64, "--top-k", 20)
    assert long[0] == short[0] == other[0] == 0
    assert long[1] == short[1] == other[1]


def test_stop_reasons_go_to_stderr(tiny, capsys):
    code, out, err = cli(capsys, "generate", tiny, "-p", "The capital", "-n", 3, "-t", 1)
    assert code == 0 and "[stopped: -n 3 reached]" in err and "[stopped" not in out
    code, out, err = cli(capsys, "generate", tiny, "-p", "The capital", "-n", -1, "-c", 12, "--ignore-eos", "-t", 1)
    assert code == 0 and "[stopped: context full at 12 tokens]" in err


def test_reverse_prompt_is_a_stop_string_with_escapes(tiny, capsys):
    _, full, _ = cli(capsys, "generate", tiny, "-p", "The capital", "-n", 16, "--ignore-eos", "-t", 1)
    text = full[len("The capital"):-1]
    stop = text[4:6]
    code, out, err = cli(capsys, "generate", tiny, "-p", "The capital", "-n", 16, "--ignore-eos", "-t", 1,
                         "-r", stop.replace("\\", "\\\\"))
    assert code == 0 and out == "The capital" + text[: text.find(stop)] + "\n"
    assert "[stopped: stop string" in err


def test_unescape_follows_llama_cpp():
    from tinyqmoe.cli.common import unescape
    assert unescape(r"a\nb\tc\\d\"e\q") == 'a\nb\tc\\d"e\\q'


def test_quiet_keeps_results_and_stop_messages(tiny, capsys):
    code, out, err = cli(capsys, "generate", tiny, "-p", "The capital", "-n", 2, "-t", 1, "-q")
    assert code == 0 and out.startswith("The capital")
    assert "tok/s" not in err and "[stopped: -n 2 reached]" in err
    code, out, err = cli(capsys, "generate", "-q", tiny, "-p", "The capital", "-n", 2, "-t", 1)  # before the verb
    assert "tok/s" not in err


@pytest.mark.parametrize("args, needle", [
    (["-p", "x", "-n", "-2"], "-n -2"),
    (["-p", "x", "--seed", "-2"], "seed"),
    (["-p", "x", "--threads", "-3"], "--threads -3"),
    (["-p", "x", "--threads", "999"], "--threads 999"),
    (["-p", "x", "--context", "-5"], "--context -5"),
    (["-p", "x", "--context", "100000"], "context 100000"),
    (["-p", "x", "--min-p", "2"], "min_p"),
    (["-p", "x", "--repeat-penalty", "0"], "repeat_penalty"),
    (["-p", "x", "--max-memory", "lots"], "--max-memory"),
    (["-p", "x", "-r", ""], "empty"),
    (["-p", "x", "-f", "/no/such/prompt"], "give the prompt once"),
    (["-f", "/no/such/prompt"], "/no/such/prompt"),
    (["-p", "x", "-m", "{tiny}"], "given twice"),
])
def test_bad_values_are_one_line_errors(tiny, capsys, args, needle):
    code, out, err = cli(capsys, "generate", tiny, *[a.format(tiny=tiny) for a in args])
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_weights_f32_on_a_container_is_an_error(tqm, capsys):
    code, out, err = cli(capsys, "generate", tqm, "-p", "x", "--weights", "f32")
    assert code == 2 and "--weights f32" in err and "container" in err and out == ""
    code, out, err = cli(capsys, "generate", tqm, "-p", "The", "-n", 2, "-t", 1, "--weights", "int8")
    assert code == 0


def test_chat_marks_a_reply_cut_at_n(tiny):
    r = subprocess.run([sys.executable, "-m", "tinyqmoe", "chat", tiny, "-n", "3", "--ignore-eos", "-t", "1"],
                       input="hello\nsecond\n", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("[stopped: -n 3 reached]") == 2 and "[stopped" not in r.stdout


def test_verbose_logs_decisions(tiny):
    r = subprocess.run([sys.executable, "-m", "tinyqmoe", "generate", tiny, "-p", "x", "-n", "1", "-t", "1", "-v",
                        "--temp", "0.8"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "tinyqmoe: loaded" in r.stderr and "resident" in r.stderr
    assert "tinyqmoe: seed" in r.stderr and "drawn at random" in r.stderr and "prefill" in r.stderr
    quiet = subprocess.run([sys.executable, "-m", "tinyqmoe", "generate", tiny, "-p", "x", "-n", "1", "-t", "1"],
                           capture_output=True, text=True, timeout=300)
    assert "tinyqmoe: loaded" not in quiet.stderr


def test_missing_optional_package_names_its_extra(tmp_path, monkeypatch, capsys):
    from test_probe import fake_result
    from tinyqmoe.hw import store, sysinfo

    monkeypatch.setenv("TINYQMOE_CACHE", str(tmp_path))
    monkeypatch.setattr(sysinfo, "cpu_model", lambda: "cpu-x")
    store.save(fake_result(quick=False))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    code, out, err = cli(capsys, "probe", "--plot", tmp_path / "p.png")
    assert code == 2 and "pip install 'tinyqmoe[plot]'" in err


def bash_complete(script: str, line: str) -> list[str]:
    words = line.split(" ")
    prog = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + f")\nCOMP_CWORD={len(words) - 1}\n"
            "_tinyqmoe\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completion_from_the_parser(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert set(bash_complete(script, "tinyqmoe gen")) == {"generate"}
    assert {"--temp", "--temperature", "--top-k", "--top-p"} <= set(bash_complete(script, "tinyqmoe generate x --t"))
    assert set(bash_complete(script, "tinyqmoe tile --kernel 3")) == {"3mm"}
    assert set(bash_complete(script, "tinyqmoe generate m --source s")) == {"streamed"}


def test_help_texts_state_the_conventions(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("-1 = until end of sequence", "<= 0 = greedy", "-1 = a random one", "0 = the model's own",
                   "peak RSS (VmHWM)", "stop string"):
        assert phrase in text, phrase


def test_no_color_and_no_escapes_in_piped_output(tiny):
    env = dict(os.environ, NO_COLOR="1")
    r = subprocess.run([sys.executable, "-m", "tinyqmoe", "generate", tiny, "-p", "The", "-n", "3", "-t", "1"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "\x1b" not in r.stdout + r.stderr and "\r" not in r.stdout + r.stderr


def test_every_command_line_in_the_readme_parses():
    """README and --help agree: each example of the README's command-line block is accepted by the parser."""
    import re
    import shlex
    from pathlib import Path

    from tinyqmoe.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```", 2)[1]
    parser = build_parser()
    lines = [ln.split("  #", 1)[0].strip() for ln in block.splitlines() if ln.startswith("tinyqmoe ")]
    assert len(lines) >= 15
    for line in lines:
        words = [w.split("|")[0] for w in shlex.split(re.sub(r"[\[\]]", " ", line))[1:]]
        words = ["2" if w in ("N", "K") else w for w in words]  # placeholders of numbers
        if words == ["--version"]:
            continue
        parser.parse_args(words)  # SystemExit (exit code 2) on an unknown option
