"""OpenAI's request and response shapes: validate a JSON body, build the JSON that answers it.

Only plain dicts and dataclasses here (no web framework), so the rules are easy to test and read.
Sampling follows the conventions of the CLI: temperature <= 0 is greedy, seed -1 (or none) random.
Fields OpenAI defines that change the answer in ways we do not implement (n > 1, logprobs, tools...)
are refused with 400 rather than ignored; fields that only label a request (user, metadata) are ignored.
"""
from __future__ import annotations

import dataclasses
import time
import uuid

COMPLETIONS_DEFAULT_MAX_TOKENS = 16   # OpenAI's default for /v1/completions; chat runs to the context
MAX_STOPS = 16


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or {401: "authentication_error", 404: "invalid_request_error",
                             503: "server_error", 500: "server_error"}.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclasses.dataclass
class GenerationRequest:
    kind: str                          # "chat" | "text"
    model: str
    messages: list[dict] | None        # chat: [{"role", "content": str}]
    prompt: str | list[int] | None     # text: a string or token ids
    max_tokens: int | None             # None: up to the context (chat) or the completions default
    temperature: float
    top_p: float
    top_k: int
    seed: int | None                   # None: a random seed
    stop: list[str]
    stream: bool
    include_usage: bool
    ignore_eos: bool = False           # an extension (vLLM's name): generate through end-of-text tokens


# ---------------------------------------------------------------- validation
def parse_chat(body, model_ids: list[str]) -> GenerationRequest:
    body = _object(body)
    _refuse_unsupported(body, chat=True)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty array", "messages")
    return _common(body, model_ids, "chat", messages=[_message(m, i) for i, m in enumerate(messages)])


def parse_completion(body, model_ids: list[str]) -> GenerationRequest:
    body = _object(body)
    _refuse_unsupported(body, chat=False)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]             # a batch of one prompt
    if isinstance(prompt, list) and prompt and all(_is_int(t) and t >= 0 for t in prompt):
        pass                           # token ids
    elif isinstance(prompt, list):
        raise APIError(400, "'prompt' must be a string, one string in an array, or an array of token ids "
                            "(several prompts in one request are not supported)", "prompt")
    elif not isinstance(prompt, str):
        raise APIError(400, "'prompt' is required and must be a string", "prompt")
    return _common(body, model_ids, "text", prompt=prompt)


def _common(body: dict, model_ids: list[str], kind: str, messages=None, prompt=None) -> GenerationRequest:
    model = body.get("model", model_ids[0])
    if not isinstance(model, str):
        raise APIError(400, "'model' must be a string", "model")
    if model not in model_ids:
        raise APIError(404, f"The model '{model}' does not exist; this server serves "
                            f"{', '.join(repr(m) for m in model_ids)}", "model", "model_not_found")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    for name in ("max_completion_tokens", "max_tokens"):
        v = body.get(name)
        if v is not None and not (_is_int(v) and v >= 1):
            raise APIError(400, f"'{name}' must be an integer >= 1, got {v!r}", name)
    if max_tokens is None and kind == "text":
        max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0.0:
        raise APIError(400, "'top_p' must be in (0, 1]", "top_p")
    top_k = body.get("top_k", 0)
    if top_k is None:
        top_k = 0
    if not (_is_int(top_k) and top_k >= 0):
        raise APIError(400, "'top_k' must be an integer >= 0 (0: no cut)", "top_k")
    seed = body.get("seed")
    if seed is not None and not (_is_int(seed) and (seed >= 0 or seed == -1)):
        raise APIError(400, "'seed' must be an integer >= 0 (or -1 for a random seed)", "seed")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise APIError(400, "'stream_options' is only allowed when 'stream' is true", "stream_options")
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise APIError(400, "'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise APIError(400, "'ignore_eos' must be a boolean", "ignore_eos")
    return GenerationRequest(kind=kind, model=model, messages=messages, prompt=prompt, max_tokens=max_tokens,
                             temperature=temperature, top_p=top_p, top_k=top_k,
                             seed=None if seed in (None, -1) else seed, stop=_stops(body.get("stop")),
                             stream=stream, include_usage=bool((options or {}).get("include_usage", False)),
                             ignore_eos=ignore_eos)


# field -> the values that mean "not used" (anything else is refused)
_UNSUPPORTED = {
    "n": (None, 1), "logprobs": (None, False, 0), "top_logprobs": (None, 0), "best_of": (None, 1),
    "echo": (None, False), "suffix": (None, ""), "tools": (None, []), "functions": (None, []),
    "tool_choice": (None, "none", "auto"), "function_call": (None, "none", "auto"),
    "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "logit_bias": (None, {}),
    "audio": (None,), "modalities": (None, ["text"]), "prediction": (None,),
}


def _refuse_unsupported(body: dict, chat: bool) -> None:
    for name, neutral in _UNSUPPORTED.items():
        if name in body and not any(body[name] == v and type(body[name]) is type(v) for v in neutral):
            raise APIError(400, f"'{name}' = {body[name]!r} is not supported by this server", name,
                           "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise APIError(400, "'response_format' other than {\"type\": \"text\"} is not supported", "response_format",
                       "unsupported_parameter")


def _message(m, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise APIError(400, f"'{where}' must be an object with a string 'role'", where)
    if m["role"] not in ("system", "developer", "user", "assistant"):
        raise APIError(400, f"'{where}.role' = {m['role']!r} is not supported "
                            "(system, developer, user, assistant)", f"{where}.role")
    content = m.get("content")
    if isinstance(content, list):          # content parts: only text ones
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise APIError(400, f"'{where}.content' parts must be {{\"type\": \"text\", \"text\": ...}}",
                               f"{where}.content")
            texts.append(part["text"])
        content = "".join(texts)
    if content is None and m["role"] == "assistant":
        content = ""
    if not isinstance(content, str):
        raise APIError(400, f"'{where}.content' must be a string", f"{where}.content")
    role = "system" if m["role"] == "developer" else m["role"]
    return {"role": role, "content": content}


def _stops(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > MAX_STOPS:
        raise APIError(400, f"'stop' must be a string or an array of at most {MAX_STOPS} strings", "stop")
    return [s for s in stop if s]


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise APIError(400, f"'{name}' must be a number in [{lo:g}, {hi:g}], got {v!r}", name)
    return float(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _object(body) -> dict:
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def check_context(prompt_tokens: int, max_tokens: int | None, context: int) -> int:
    """How many tokens may be generated; 400 with the numbers when the request cannot fit."""
    if prompt_tokens == 0:
        raise APIError(400, "the prompt is empty (0 tokens)", "prompt")
    if prompt_tokens >= context:
        raise APIError(400, f"This model's maximum context length is {context} tokens, but the prompt has "
                            f"{prompt_tokens} tokens (no room to generate)", "messages", "context_length_exceeded")
    if max_tokens is not None and prompt_tokens + max_tokens > context:
        raise APIError(400, f"This model's maximum context length is {context} tokens; you requested "
                            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} "
                            f"for the completion). Lower max_tokens or shorten the prompt.",
                       "max_tokens", "context_length_exceeded")
    return context - prompt_tokens if max_tokens is None else max_tokens


# ---------------------------------------------------------------- responses
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response(req: GenerationRequest, rid: str, text: str, finish_reason: str, use: dict) -> dict:
    """The whole answer of a request that does not stream."""
    if req.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": req.model, "choices": [choice],
            "usage": use}


def chunk(req: GenerationRequest, rid: str, text: str | None = None, finish_reason: str | None = None,
          first: bool = False) -> dict:
    """One server-sent event of a streamed answer (the first chat chunk announces the role)."""
    if req.kind == "chat":
        delta = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    out = {"id": rid, "object": obj, "created": int(time.time()), "model": req.model, "choices": [choice]}
    if req.include_usage:
        out["usage"] = None
    return out


def usage_chunk(req: GenerationRequest, rid: str, use: dict) -> dict:
    """The last event when stream_options.include_usage: no choices, the usage."""
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": req.model, "choices": [], "usage": use}
