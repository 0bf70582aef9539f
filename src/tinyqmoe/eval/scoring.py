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

`build_request` and `make_record` turn a question into ids for the batched scorer (batched.py) and its
result into the lm-eval sample record.
"""
from __future__ import annotations

import hashlib
import json

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


def build_request(model, task: Task, doc: Doc, shots: list[Doc], add_bos: bool | None = None,
                  prefix_cache: dict | None = None):
    """(Request, context, continuations, truncated) for one question; the request's `shared` ids are
    the encoded description + shots (cached per text in `prefix_cache`)."""
    from tinyqmoe.eval.batched import Request
    context, continuations = task.context(doc, shots), task.continuations(doc)
    ctx, conts, truncated = encode_request(model, context, continuations, add_bos)
    prefix = task.shared_prefix(doc, shots)
    cache = {} if prefix_cache is None else prefix_cache
    if prefix not in cache:
        cache.clear()  # questions come subject by subject: keep one
        cache[prefix] = encode_request(model, prefix, ["x"], add_bos)[0] if prefix else []
    return Request(ctx, conts, cache[prefix]), context, continuations, truncated


def hash_string(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_record(task: Task, doc: Doc, doc_id: int, request, context: str, continuations: list[str],
                scored, truncated: bool) -> dict:
    """One lm-eval `--log_samples` record (resps as strings, as lm-eval writes them), our extras
    under "tinyqmoe"."""
    lls = np.array([float(ll) for ll, _ in scored.results])
    lengths = np.array([float(len(c)) for c in task.choices(doc)])  # lm-eval: chars of the choice
    pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
    metrics = {"acc": float(pred == doc.gold), "acc_norm": float(pred_norm == doc.gold)}
    metrics = {m: metrics[m] for m in task.metrics}
    fields = doc.fields()
    pairs = [[str(float(ll)), str(bool(g))] for ll, g in scored.results]
    return {
        "doc_id": doc_id, "doc": fields, "target": str(doc.gold),
        "arguments": {f"gen_args_{i}": {"arg_0": context, "arg_1": c} for i, c in enumerate(continuations)},
        "resps": [[p] for p in pairs], "filtered_resps": pairs, "filter": "none",
        "metrics": list(metrics),
        "doc_hash": hash_string(json.dumps(fields, indent=2, ensure_ascii=False)),
        "prompt_hash": hash_string(context), "target_hash": hash_string(str(doc.gold)),
        **metrics,
        "tinyqmoe": {
            "loglik": [round(float(x), 6) for x in lls], "greedy": [bool(g) for _, g in scored.results],
            "pred": pred, "pred_norm": pred_norm, "gold": doc.gold, "subject": doc.subject, "id": doc.id,
            "n_ctx_tokens": len(request.ctx), "n_cont_tokens": sum(len(c) for c in request.conts),
            "prefill_tokens": scored.prefill_tokens, "truncated": truncated,
            "seconds": round(scored.seconds, 6),
        },
    }
