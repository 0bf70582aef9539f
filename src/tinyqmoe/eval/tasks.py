"""Tasks as declarative records, shaped like lm-evaluation-harness task YAMLs.

A prompt is built exactly as lm-eval builds it (ConfigurableTask + ContextSampler):

  context      = description + Σ_shots (doc_to_text(shot) + target_delimiter + choice(shot, gold)
                                          + fewshot_delimiter) + doc_to_text(doc)
  continuation = target_delimiter + choice(doc, i)      for each answer i

Templates are Jinja2 over the doc's fields (question, choices, subject, id), as in lm-eval.

Names are lm-eval's: a leaf task is `arc_easy`, `arc_challenge` or `mmlu_<subject>` (57); groups are
`mmlu` (its four categories) and `mmlu_stem`, `mmlu_humanities`, `mmlu_social_sciences`,
`mmlu_other` (their subjects, as lm-eval's tasks/mmlu/default tags them).
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

    def shared_prefix(self, doc: Doc, shots: list[Doc]) -> str:
        """The part of the context before the question: description and shots (same for a subject)."""
        parts = [self.render(self.description, doc)]
        for s in shots:
            parts.append(self.render(self.doc_to_text, s) + self.target_delimiter + self.target(s)
                         + self.fewshot_delimiter)
        return "".join(parts)

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return self.shared_prefix(doc, shots) + self.render(self.doc_to_text, doc)

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
    metrics=("acc",))

ARC_EASY = Task(
    name="arc_easy", version="1", description="",
    doc_to_text="Question: {{ question }}\nAnswer:", doc_to_choice=None,
    default_shots=0, fewshot_source="OLMES curated ARC-Easy shots (from the train split)")

ARC_CHALLENGE = dataclasses.replace(
    ARC_EASY, name="arc_challenge",
    fewshot_source="OLMES curated ARC-Challenge shots (from the train split)")

TASKS: dict[str, Task] = {t.name: t for t in (MMLU, ARC_EASY, ARC_CHALLENGE)}

# lm-eval's tasks/mmlu/default: each subject's `tag` (mmlu_<category>_tasks)
MMLU_CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": ("abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
             "college_computer_science", "college_mathematics", "college_physics", "computer_security",
             "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
             "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
             "high_school_physics", "high_school_statistics", "machine_learning"),
    "other": ("business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
              "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
              "professional_accounting", "professional_medicine", "virology"),
    "social_sciences": ("econometrics", "high_school_geography", "high_school_government_and_politics",
                        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
                        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
                        "sociology", "us_foreign_policy"),
    "humanities": ("formal_logic", "high_school_european_history", "high_school_us_history",
                   "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
                   "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
                   "world_religions"),
}
SUBJECT_CATEGORY = {s: c for c, subjects in MMLU_CATEGORIES.items() for s in subjects}


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One lm-eval task that scores documents: `arc_easy`, or `mmlu_<subject>` (one subject of MMLU)."""
    name: str
    task: Task
    subject: str = ""

    def docs(self, split: str) -> list[Doc]:
        docs = self.task.docs(split)
        return [d for d in docs if d.subject == self.subject] if self.subject else docs


# groups as lm-eval nests them: mmlu -> categories -> subjects
GROUPS: dict[str, list[str]] = {"mmlu": [f"mmlu_{c}" for c in ("stem", "other", "social_sciences", "humanities")]}
GROUPS.update({f"mmlu_{c}": [f"mmlu_{s}" for s in subjects] for c, subjects in MMLU_CATEGORIES.items()})
LEAVES: dict[str, Leaf] = {"arc_easy": Leaf("arc_easy", ARC_EASY), "arc_challenge": Leaf("arc_challenge", ARC_CHALLENGE)}
LEAVES.update({f"mmlu_{s}": Leaf(f"mmlu_{s}", MMLU, s) for s in SUBJECT_CATEGORY})


def leaves_of(name: str) -> list[str]:
    if name in LEAVES:
        return [name]
    return [leaf for sub in GROUPS[name] for leaf in leaves_of(sub)]


def groups_of(name: str) -> list[str]:
    """`name` and the groups under it, outermost first."""
    return [name, *(g for sub in GROUPS[name] for g in groups_of(sub))] if name in GROUPS else []


def get_tasks(names: str | list[str]) -> list[str]:
    """The task and group names asked for, checked (comma-separated string or list)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in LEAVES and n not in GROUPS]
    if unknown or not names:
        raise UsageError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; known: mmlu, "
                         "mmlu_stem|humanities|social_sciences|other, mmlu_<subject>, arc_easy, arc_challenge")
    return list(dict.fromkeys(names))
