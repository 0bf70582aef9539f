"""Who scores the questions: a model spec (how to load a model), and the in-process scorer.

`eval/runner.py` drives tasks; `eval/distributed.py` scores on Ray workers; both build on this.
"""
from __future__ import annotations

import dataclasses
import importlib

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.data import Doc
from tinyqmoe.eval.scoring import score_doc, uses_bos
from tinyqmoe.eval.tasks import Task

WEIGHT_KINDS = ("f32", "int8")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to load a model: `[LABEL=]SOURCE[:WEIGHTS]`, e.g. `Original=default:f32`, `smol.tqm`."""
    source: str                       # a path or a model alias ("default")
    weights: str | None = None        # "f32" | "int8"; None: the loader's default
    label: str | None = None          # column name in comparisons
    threads: int | None = None
    max_memory: str | None = None
    factory: str = "tinyqmoe:load"    # "module:function" called as f(source, **options)

    @classmethod
    def parse(cls, text: str, **options) -> "ModelSpec":
        label, sep, rest = text.partition("=")
        if not sep:
            label, rest = None, text
        source, weights = rest, None
        head, colon, tail = rest.rpartition(":")
        if colon and tail in WEIGHT_KINDS:
            source, weights = head, tail
        if not source:
            raise UsageError(f"model variant {text!r} names no model ([LABEL=]MODEL[:f32|int8])")
        return cls(source=source, weights=weights, label=label or None, **options)

    @property
    def title(self) -> str:
        return self.label or (f"{self.source}:{self.weights}" if self.weights else self.source)

    def load(self):
        module, _, name = self.factory.partition(":")
        loader = getattr(importlib.import_module(module), name, None)
        if loader is None:
            raise UsageError(f"{self.factory} is not available in this build (no model loader)")
        options = {k: v for k, v in (("weights", self.weights), ("threads", self.threads),
                                     ("max_memory", self.max_memory)) if v is not None}
        return loader(self.source, **options)


def describe(model) -> dict:
    return {"name": str(getattr(model, "name", type(model).__name__)),
            "weights_kind": str(getattr(model, "weights_kind", "unknown")),
            "bits_per_weight": getattr(model, "bits_per_weight", None),
            "add_bos": uses_bos(model)}


class LocalScorer:
    """Scores questions in this process."""

    def __init__(self, model):
        self.model = model

    def describe(self) -> dict:
        return describe(self.model)

    def run(self, task: Task, docs: list[Doc], shots: int, add_bos: bool | None, on_record) -> None:
        pool = task.fewshot_pool() if shots else {}
        for d in docs:
            on_record(score_doc(self.model, task, d, task.shots_for(d, pool, shots), add_bos))

    def close(self) -> None:
        pass
