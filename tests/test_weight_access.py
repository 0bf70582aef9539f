"""One weight-access layer (issue 10): one reader's checks everywhere, every tensor kind in every
source, an import that changes nothing, no import cycles, a load plan that refuses contradictions,
and the multi-sequence forward pass."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyqmoe
from tinyqmoe.errors import CorruptionDetected, UsageError
from tinymodels import save_tiny_hf_llama

pytest.importorskip("transformers")
SRC = Path(__file__).resolve().parents[1] / "src" / "tinyqmoe"
PROMPT = [5, 17, 200, 3, 99, 42]
SOURCES = ("resident", "streamed", "fused")


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return save_tiny_hf_llama(tmp_path_factory.mktemp("wa") / "hf", tie=False)


def compress(hf, path, **opts):
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint

    with open_checkpoint(hf) as ck:
        write_container(ck, path, CompressOptions(chunk_size=2048, **opts), progress=False)
    return path


def greedy(path, source, n=12):
    with tinyqmoe.load(path, source=source, threads=2) as m:
        m.tokenizer.stop_ids = frozenset()
        return list(m.stream_ids(PROMPT, max_new_tokens=n))


def forge_ternary_10(src: Path, dst: Path) -> None:
    """Set one 2-bit field of a ternary chunk to 0b10 and fix every checksum: only §5 can catch it."""
    from container_corrupt import chunk_check, rebuild, split
    from tinyqmoe.compress.reader import open_container

    blob = bytearray(src.read_bytes())
    with open_container(src) as c:
        e = c.tensor("model.layers.0.self_attn.q_proj.weight")
        assert e.qtype == "ternary" and int(e.chunks[0]["codec"]) == 0   # raw: the byte is the field
        off, size = int(e.chunks[0]["offset"]), int(e.chunks[0]["stored_size"])
    blob[off] = (blob[off] & 0xFC) | 0b10
    data_part, index, header = split(bytes(blob))
    data_part = bytearray(data_part)
    k = int(np.nonzero(index["offset"] == off)[0][0])
    index[k]["check"] = chunk_check(data_part, bytes(blob[off:off + size]), index[k])
    dst.write_bytes(rebuild(bytes(data_part), index, header))


def test_forged_ternary_field_is_refused_by_verify_and_every_source(tiny_hf, tmp_path):
    from tinyqmoe.compress.inspect import verify

    good = compress(tiny_hf, tmp_path / "t.tqm", bits=2, codec="raw")
    verify(good)
    bad = tmp_path / "forged.tqm"
    forge_ternary_10(good, bad)
    with pytest.raises(CorruptionDetected, match="0b10"):
        verify(bad)
    for source in SOURCES:
        with pytest.raises(CorruptionDetected, match="0b10"):
            greedy(bad, source, n=2)


def test_f32_embedding_and_lm_head_run_in_every_source(tiny_hf, tmp_path):
    path = compress(tiny_hf, tmp_path / "f32emb.tqm", quantize_embeddings=False, quantize_lm_head=False)
    from tinyqmoe.compress.reader import open_container

    with open_container(path) as c:
        assert c.tensor("model.embed_tokens.weight").qtype == "f32" and c.tensor("lm_head.weight").qtype == "f32"
    ref = greedy(path, "resident")
    for source in ("streamed", "fused"):
        assert greedy(path, source) == ref, source


def test_importing_the_api_leaves_the_environment_unchanged():
    code = ("import os, sys\nbefore = dict(os.environ)\n"
            "import tinyqmoe.api, tinyqmoe.runtime, tinyqmoe.weights.fused, tinyqmoe.weights.streamed\n"
            "import tinyqmoe.compress.reader, tinyqmoe.model.forward, tinyqmoe.cli\n"
            "sys.exit(0 if dict(os.environ) == before else 1)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                             "TINYQMOE_WAIT_POLICY")}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0


def _imports() -> dict[str, set[str]]:
    """module -> the tinyqmoe modules it imports (at any depth of the file), by static reading."""
    modules = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = f
    graph = {}
    for name, f in modules.items():
        deps = set()
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    deps.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        graph[name] = {d for d in deps if d in modules and d != name and d != "tinyqmoe"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycles_between_files_or_folders():
    files = _imports()
    assert _cycle(files) is None, " -> ".join(_cycle(files))
    folder = lambda m: ".".join(m.split(".")[:2])  # noqa: E731  tinyqmoe.<folder or top-level module>
    folders: dict[str, set[str]] = {}
    for a, deps in files.items():
        folders.setdefault(folder(a), set()).update(folder(b) for b in deps if folder(b) != folder(a))
    assert _cycle(folders) is None, " -> ".join(_cycle(folders))


def test_model_never_imports_sources_readers_or_formats():
    for a, deps in _imports().items():
        if a.startswith("tinyqmoe.model"):
            bad = [d for d in deps if d.startswith(("tinyqmoe.weights", "tinyqmoe.compress", "tinyqmoe.formats"))]
            assert not bad, (a, bad)


def test_load_refuses_contradictions(tiny_hf, tmp_path):
    tqm = compress(tiny_hf, tmp_path / "m.tqm")
    cases = [(dict(weights="f32"), tqm, "weights=f32 needs a float checkpoint"),
             (dict(group=32), tqm, "group applies when quantizing"),
             (dict(weights="int4"), tiny_hf, "unknown weights kind"),
             (dict(weights="f32", max_memory="500MB"), tiny_hf, "run int8 weights, not f32"),
             (dict(source="fused", cache=False), tiny_hf, "need the int8 cache"),
             (dict(cold=True), tqm, "cold applies"),
             (dict(cold=True, source="resident"), tqm, "cold applies"),
             (dict(threads=0), tqm, "threads must be >= 1"),
             (dict(context=-1), tqm, "context must be >= 0"),
             (dict(source="mapped"), tqm, "unknown weight source")]
    from tinyqmoe.api import plan_load

    for kwargs, path, message in cases:
        with pytest.raises(UsageError, match=message):
            plan_load(path, **kwargs)
    plan = plan_load(tqm, source="fused", context=0)
    assert plan.weights == "stored" and plan.context == 0 and plan.reads_container  # 0: the model's own


def test_batched_rows_equal_each_sequence_alone(tiny_hf, tmp_path):
    """forward_batch with path='stream': a sequence's logits do not depend on the rest of the batch."""
    tqm = compress(tiny_hf, tmp_path / "b.tqm")
    seqs = [[5, 17, 200], [3, 99, 42, 7, 8], [11]]
    with tinyqmoe.load(tqm, threads=2) as m:
        alone = [m.forward_batch([m.new_state(16)], [s], all_logits=True, path="stream")[0] for s in seqs]
        states = [m.new_state(16) for _ in seqs]
        together = m.forward_batch(states, seqs, all_logits=True, path="stream")
        for a, b in zip(alone, together):
            assert np.array_equal(a, b)
        # the next step of all three at once equals each sequence's own next step
        nxt = m.forward_batch(states, [[1], [2], [4]], path="stream")
        for s, t, got in zip(seqs, [1, 2, 4], nxt):
            st = m.new_state(16)
            m.forward_batch([st], [s], path="stream")
            assert np.array_equal(m.forward_batch([st], [[t]], path="stream")[0], got)


def test_fork_and_truncate_reuse_a_prefix(tiny_hf, tmp_path):
    tqm = compress(tiny_hf, tmp_path / "f.tqm")
    with tinyqmoe.load(tqm, threads=1) as m:
        prefix, a, b = [5, 17, 200, 3], [99, 42], [7, 8, 9]
        base = m.new_state(32)
        m.forward_batch([base], [prefix], path="stream")
        fa, fb = base.fork(), base.fork()
        got = m.forward_batch([fa, fb], [a, b], all_logits=True, path="stream")
        for cont, g in ((a, got[0]), (b, got[1])):
            st = m.new_state(32)
            ref = m.forward_batch([st], [prefix + cont], all_logits=True, path="stream")[0][len(prefix):]
            np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-5)
        fa.truncate(len(prefix))
        again = m.forward_batch([fa], [b], all_logits=True, path="stream")[0]
        np.testing.assert_array_equal(again, got[1])
        with pytest.raises(UsageError, match="exceeds the limit"):
            m.forward_batch([m.new_state(2)], [[1, 2, 3]])
