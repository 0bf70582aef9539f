"""Independent reference for the eval harness: transformers scores the same token ids.

    .venv/bin/python benchmarks/eval_reference.py --tasks arc_easy,mmlu --limit 20

For each sampled question, the prompt is built and tokenized once by tinyqmoe (so both sides see
the same ids); tinyqmoe's engine (f32, shared KV cache) and transformers' LlamaForCausalLM (the
same GGUF dequantized to fp32, one full forward pass per choice, no cache sharing) each give the
per-choice log-likelihoods. Prints the largest difference and whether the chosen answers agree.
Dev-only: needs torch and transformers (pip install -e '.[dev]').
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import types

import numpy as np


class TransformersModel:
    """The engine's scoring API (`loglikelihood_ids`) computed by transformers, fp32."""

    def __init__(self, gguf_path, tokenizer):
        import torch
        import transformers
        self.torch = torch
        self.hf = transformers.AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
        self.tokenizer = tokenizer
        self.config = types.SimpleNamespace(max_seq_len=self.hf.config.max_position_embeddings)
        self.name, self.weights_kind, self.bits_per_weight = "transformers", "f32", 32.0

    def loglikelihood_ids(self, context_ids, continuations):
        torch = self.torch
        out = []
        with torch.no_grad():
            for cont in continuations:
                ids = list(context_ids) + list(cont)
                logits = self.hf(torch.tensor([ids[:-1]])).logits[0, len(context_ids) - 1:].double()
                lp = torch.log_softmax(logits, dim=-1)
                target = torch.tensor(cont)
                out.append((float(lp[torch.arange(len(cont)), target].sum()),
                            bool((logits.argmax(-1) == target).all())))
        return out


def crosscheck(tasks: str, limit: int, split: str = "test", shots: int | None = None,
               ours=None, ref=None) -> dict:
    """Per-choice log-likelihoods of tinyqmoe f32 and transformers on the same ids."""
    import tinyqmoe
    from tinyqmoe.assets import model_path
    from tinyqmoe.eval.data import apply_limit
    from tinyqmoe.eval.scoring import encode_request
    from tinyqmoe.eval.tasks import TASKS

    ours = ours or tinyqmoe.load("default", weights="f32")
    ref = ref or TransformersModel(model_path("default"), ours.tokenizer)
    report = {}
    for task in (TASKS[name.strip()] for name in tasks.split(",")):
        pool = task.fewshot_pool()
        docs = apply_limit(task.docs(split), limit)
        max_abs, n_choices, same_pred, same_pred_norm, t_ours, t_ref = 0.0, 0, 0, 0, 0.0, 0.0
        for d in docs:
            k = task.default_shots if shots is None else shots
            ctx_text = task.context(d, task.shots_for(d, pool, k))
            ctx, conts, _ = encode_request(ours, ctx_text, task.continuations(d))
            t0 = time.perf_counter()
            a = np.array([x for x, _ in ours.loglikelihood_ids(ctx, conts)])
            t1 = time.perf_counter()
            b = np.array([x for x, _ in ref.loglikelihood_ids(ctx, conts)])
            t2 = time.perf_counter()
            t_ours, t_ref = t_ours + t1 - t0, t_ref + t2 - t1
            lengths = np.array([len(c) for c in task.choices(d)], dtype=float)
            max_abs = max(max_abs, float(np.abs(a - b).max()))
            n_choices += len(a)
            same_pred += int(a.argmax() == b.argmax())
            same_pred_norm += int((a / lengths).argmax() == (b / lengths).argmax())
        report[task.name] = {"questions": len(docs), "choices": n_choices, "max_abs_loglik_diff": max_abs,
                             "same_pred": same_pred, "same_pred_norm": same_pred_norm,
                             "seconds_tinyqmoe": round(t_ours, 2), "seconds_transformers": round(t_ref, 2)}
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="arc_easy,mmlu")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--split", default="test")
    p.add_argument("--shots", type=int, help="default: each task's (MMLU 5, ARC 0)")
    args = p.parse_args(argv)
    json.dump(crosscheck(args.tasks, args.limit, args.split, args.shots), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
