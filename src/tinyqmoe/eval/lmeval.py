"""The `tinyqmoe` model for lm-evaluation-harness (`pip install 'tinyqmoe[lmeval]'`).

lm-eval has no plug-in entry point for models: importing this module registers the name.

    import lm_eval, tinyqmoe.eval.lmeval
    lm_eval.simple_evaluate(model="tinyqmoe", model_args="pretrained=default,weights=int8",
                            tasks=["arc_easy"])

    python -c "import tinyqmoe.eval.lmeval, lm_eval.__main__ as m; m.cli_evaluate()" \
        --model tinyqmoe --model_args pretrained=default,weights=f32 --tasks arc_easy

model_args: pretrained (a path or `default`), weights (f32 | int8), threads, max_memory,
add_bos (true | false; default the tokenizer's convention), max_rows (batch rows).
Log-likelihoods go through the same batched scorer as `tinyqmoe eval`: requests with the same
context are scored together, and consecutive contexts share the KV cache of their common prefix
(an MMLU subject's 5-shot prefix runs once).
"""
from __future__ import annotations

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from tinyqmoe.eval.batched import MAX_ROWS, BatchScorer, Request
from tinyqmoe.eval.scoring import encode_request, uses_bos
from tinyqmoe.eval.spec import ModelSpec


def _flag(value) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes")


@register_model("tinyqmoe")
class TinyQMoELM(LM):
    def __init__(self, pretrained: str = "default", weights: str = "int8", threads=None, max_memory=None,
                 add_bos=None, max_rows: int = MAX_ROWS, model=None, **_ignored):
        super().__init__()
        if model is None:
            model = ModelSpec(pretrained, weights, threads=int(threads) if threads else None,
                              max_memory=max_memory).load()
        self.model = model
        self.add_bos = _flag(add_bos)
        self.scorer = BatchScorer(model, max_rows=int(max_rows))

    # ------------------------------------------------------------------ scoring
    def _score(self, pairs: list[tuple[str, list[str]]]) -> list[list[tuple[float, bool]]]:
        """For each (context, continuations): (log-likelihood, greedy) per continuation."""
        reqs, prev = [], []
        for context, conts in pairs:
            ctx, ids, _ = encode_request(self.model, context, conts, self.add_bos)
            reqs.append(Request(ctx, ids, prev))
            prev = ctx
        out = [None] * len(reqs)
        for i, scored in self.scorer.score(reqs):
            out[i] = scored.results
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        by_context: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_context.setdefault(r.args[0], []).append(i)
        contexts = list(by_context)
        scored = self._score([(c, [requests[i].args[1] for i in by_context[c]]) for c in contexts])
        out: list = [None] * len(requests)
        for c, results in zip(contexts, scored):
            for i, res in zip(by_context[c], results):
                out[i] = (float(res[0]), bool(res[1]))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scores: the text in windows of the model's context, each scored once."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        tok = self.model.tokenizer
        window = getattr(self.model, "max_context", None) or self.model.config.max_seq_len
        stops = sorted(getattr(tok, "stop_ids", None) or [0])
        prefix = tok.bos_id if tok.bos_id is not None else stops[0]  # lm-eval: BOS, else end-of-text
        out = []
        for r in requests:
            ids = tok.encode(r.args[0], add_bos=False)
            total = 0.0
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=ids, prefix_token=prefix, max_seq_len=window, context_len=1)):
                ll, _ = self.model.loglikelihood_ids(list(ctx), [list(cont)])[0]
                total += ll
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with temperature) generation cut at the first `until` string."""
        tok = self.model.tokenizer
        out = []
        for r in requests:
            context, kwargs = r.args[0], dict(r.args[1] or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ids = tok.encode(context, add_bos=uses_bos(self.model) if self.add_bos is None else self.add_bos)
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
            budget = int(kwargs.get("max_gen_toks", 256))
            got: list[int] = []
            text = ""
            for t in self.model.stream_ids(ids, max_new_tokens=budget, temperature=temperature):
                got.append(t)
                text = tok.decode(got)
                if any(u in text for u in until):
                    break
            for u in until:
                text = text.split(u)[0]
            out.append(text)
        return out
