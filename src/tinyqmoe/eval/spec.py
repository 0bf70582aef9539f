"""How to load a model for evaluation (`ModelSpec`), and what a loaded model says about itself.

Ray workers need the spec, not the model: each loads its own copy.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.scoring import uses_bos

log = logging.getLogger("tinyqmoe")   # -v shows it (cli/__init__.py)

WEIGHT_KINDS = ("f32", "int8")


# KV caches a scorer holds at once: a subject's kept few-shot prefix and the question forked from it (or
# computed anew when its context was truncated): what a memory budget must hold (tinyqmoe.load sequences=)
BUDGET_SEQUENCES = 2


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
        if self.max_memory is not None:
            options["sequences"] = BUDGET_SEQUENCES
        model = loader(self.source, **options)
        log.info("loaded %s: %s weights, %s source, context %s, %s rows per forward call", self.title,
                 getattr(model, "weights_kind", "?"), getattr(model, "source", "?"),
                 getattr(model, "max_context", "?"), getattr(model, "max_rows", None) or "any number of")
        return model


def describe(model) -> dict:
    return {"name": str(getattr(model, "name", type(model).__name__)),
            "weights_kind": str(getattr(model, "weights_kind", "unknown")),
            "bits_per_weight": getattr(model, "stored_bits_per_weight", getattr(model, "bits_per_weight", None)),
            "source": getattr(model, "source", None),
            "prefill": getattr(model, "prefill_path", None),
            "add_bos": uses_bos(model)}
