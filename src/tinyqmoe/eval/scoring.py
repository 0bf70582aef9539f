"""Log-likelihood scoring of multiple-choice questions, at the string level.

Tokenization follows lm-evaluation-harness (v0.4 `HFLM._encode_pair`):
  1. trailing whitespace of the context is moved to the front of each continuation
     ("Answer: " + "X" scores as "Answer:" + " X");
  2. the context is encoded alone, context+continuation is encoded whole, and the continuation's
     tokens are the whole encoding after the first len(context tokens) tokens;
  3. BOS is prepended to the context only if the tokenizer's convention says so
     (`tokenizer.add_bos` or `tokenizer.spec.add_bos`; lm-eval's HF default is add_bos_token=False);
     an empty context is replaced by [bos_id], like lm-eval's prefix token.
  4. if context + the longest continuation exceed the model's window (`model.max_context`, else `model.config.max_seq_len`),
     the context is cut from the left so that the forward pass holds at most max_seq_len tokens.

The context's tokens are shared: the engine runs them once and continues each answer from a
copy of the KV cache (`model.loglikelihood_ids`).
"""
from __future__ import annotations

import time

import numpy as np

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.data import Doc
from tinyqmoe.eval.tasks import Task


def uses_bos(model) -> bool:
    """The tokenizer's convention: `tokenizer.add_bos`, else `tokenizer.spec.add_bos`, else False."""
    tok = model.tokenizer
    flag = getattr(tok, "add_bos", None)
    if flag is None:
        flag = getattr(getattr(tok, "spec", None), "add_bos", False)
    return bool(flag)


def max_seq_len(model) -> int | None:
    """Tokens one forward pass may hold: `model.max_context` (a memory budget may lower it), else
    `model.config.max_seq_len`."""
    return getattr(model, "max_context", None) or getattr(getattr(model, "config", None), "max_seq_len", None)


def encode_request(model, context: str, continuations: list[str],
                   add_bos: bool | None = None) -> tuple[list[int], list[list[int]], bool]:
    """(context ids, continuation ids, context was truncated) for one question."""
    tok = model.tokenizer
    add_bos = uses_bos(model) if add_bos is None else add_bos
    n_spaces = len(context) - len(context.rstrip())
    head, moved = (context[:-n_spaces], context[-n_spaces:]) if n_spaces else (context, "")
    ctx = tok.encode(head, add_bos=False) if head else []
    conts = []
    for c in continuations:
        whole = tok.encode(head + moved + c, add_bos=False)
        conts.append(whole[len(ctx):])
    if any(len(c) == 0 for c in conts):
        raise UsageError(f"a continuation encodes to no tokens after context {context[-30:]!r}")
    if add_bos or not ctx:
        if tok.bos_id is None:
            raise UsageError("the context is empty (or BOS is required) but the tokenizer has no BOS token")
        ctx = [tok.bos_id] + ctx
    truncated = False
    window = max_seq_len(model)
    if window is not None:
        keep = window + 1 - max(len(c) for c in conts)  # input = ctx + cont[:-1] <= window
        if keep < 1:
            raise UsageError(f"a continuation of {max(len(c) for c in conts)} tokens does not fit "
                             f"the model's {window}-token window")
        if len(ctx) > keep:
            ctx, truncated = ctx[-keep:], True
    return ctx, conts, truncated


def loglikelihood(model, context: str, continuations: list[str],
                  add_bos: bool | None = None) -> list[tuple[float, bool]]:
    """For each continuation: (log P(continuation | context), greedy decoding produces it)."""
    ctx, conts, _ = encode_request(model, context, continuations, add_bos)
    return [(float(ll), bool(g)) for ll, g in model.loglikelihood_ids(ctx, conts)]


def score_doc(model, task: Task, doc: Doc, shots: list[Doc], add_bos: bool | None = None) -> dict:
    """Score one question: the record that goes to the samples jsonl."""
    t0 = time.perf_counter()
    context = task.context(doc, shots)
    continuations = task.continuations(doc)
    ctx, conts, truncated = encode_request(model, context, continuations, add_bos)
    out = model.loglikelihood_ids(ctx, conts)
    seconds = time.perf_counter() - t0
    lls = np.array([float(ll) for ll, _ in out])
    lengths = np.array([float(len(c)) for c in task.choices(doc)])  # lm-eval: chars of the choice
    pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
    return {
        "doc_id": doc.id, "subject": doc.subject, "gold": doc.gold,
        "loglik": [round(float(x), 6) for x in lls], "greedy": [bool(g) for _, g in out],
        "pred": pred, "pred_norm": pred_norm,
        "acc": int(pred == doc.gold), "acc_norm": int(pred_norm == doc.gold),
        "n_ctx_tokens": len(ctx), "n_cont_tokens": sum(len(c) for c in conts),
        "truncated": truncated, "seconds": round(seconds, 6),
    }
