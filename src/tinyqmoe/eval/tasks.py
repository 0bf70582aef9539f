"""Tasks as declarative records, shaped like lm-evaluation-harness task YAMLs.

A prompt is built exactly as lm-eval builds it (ConfigurableTask + ContextSampler):

  context      = description + Σ_shots (doc_to_text(shot) + target_delimiter + choice(shot, gold)
                                          + fewshot_delimiter) + doc_to_text(doc)
  continuation = target_delimiter + choice(doc, i)      for each answer i

Templates are Jinja2 over the doc's fields (question, choices, subject, id), as in lm-eval.
"""
from __future__ import annotations

import dataclasses
import functools

from tinyqmoe.errors import UsageError
from tinyqmoe.eval import data
from tinyqmoe.eval.data import Doc


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    version: str                      # bump when a prompt or metric changes
    description: str                  # jinja2; rendered with the question's doc
    doc_to_text: str                  # jinja2
    doc_to_choice: tuple[str, ...] | None  # fixed answer strings (MMLU letters); None: doc.choices
    default_shots: int
    fewshot_source: str               # human-readable, for the report
    stratified: bool                  # --limit samples by subject (MMLU) or takes the first N (ARC)
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    metrics: tuple[str, ...] = ("acc", "acc_norm")

    # ---------------------------------------------------------- data
    def docs(self, split: str) -> list[Doc]:
        return data.mmlu_docs(split) if self.name == "mmlu" else data.arc_docs(self.name, split)

    def fewshot_pool(self) -> dict[str, list[Doc]]:
        return data.mmlu_fewshot() if self.name == "mmlu" else data.arc_fewshot(self.name)

    # ---------------------------------------------------------- prompts
    def choices(self, doc: Doc) -> list[str]:
        return list(self.doc_to_choice) if self.doc_to_choice is not None else list(doc.choices)

    def target(self, doc: Doc) -> str:
        return self.choices(doc)[doc.gold]

    def render(self, template: str, doc: Doc) -> str:
        return _template(template).render(**doc.fields())

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        parts = [self.render(self.description, doc)]
        for s in shots:
            parts.append(self.render(self.doc_to_text, s) + self.target_delimiter + self.target(s)
                         + self.fewshot_delimiter)
        parts.append(self.render(self.doc_to_text, doc))
        return "".join(parts)

    def continuations(self, doc: Doc) -> list[str]:
        return [self.target_delimiter + c for c in self.choices(doc)]

    def shots_for(self, doc: Doc, pool: dict[str, list[Doc]], k: int) -> list[Doc]:
        """The first k examples of the doc's subject (lm-eval's first_n sampler)."""
        examples = pool.get(doc.subject, [])
        if k > len(examples):
            raise UsageError(f"{self.name} has only {len(examples)} few-shot examples, asked for {k}")
        return examples[:k]


@functools.lru_cache(maxsize=None)
def _template(source: str):
    import jinja2
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source)


MMLU = Task(
    name="mmlu", version="1",
    description="The following are multiple choice questions (with answers) about "
                "{{ subject.replace('_', ' ') }}.\n\n",
    doc_to_text="{{ question.strip() }}\nA. {{ choices[0] }}\nB. {{ choices[1] }}\n"
                "C. {{ choices[2] }}\nD. {{ choices[3] }}\nAnswer:",
    doc_to_choice=("A", "B", "C", "D"),
    default_shots=5, fewshot_source="dev split of the same subject, in order (first_n)",
    stratified=True, metrics=("acc",))

ARC_EASY = Task(
    name="arc_easy", version="1", description="",
    doc_to_text="Question: {{ question }}\nAnswer:", doc_to_choice=None,
    default_shots=0, fewshot_source="OLMES curated ARC-Easy shots (from the train split)",
    stratified=False)

ARC_CHALLENGE = dataclasses.replace(
    ARC_EASY, name="arc_challenge",
    fewshot_source="OLMES curated ARC-Challenge shots (from the train split)")

TASKS: dict[str, Task] = {t.name: t for t in (MMLU, ARC_EASY, ARC_CHALLENGE)}


def get_tasks(names: str | list[str]) -> list[Task]:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise UsageError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(TASKS)}")
    return [TASKS[n] for n in names]
