"""Tokenizer: a `tokenizers.Tokenizer` plus BOS/EOS conventions and the jinja2 chat template."""
from __future__ import annotations

import dataclasses
import datetime
import json

from tinyqmoe.errors import CorruptionDetected, UnsupportedModel, UsageError


@dataclasses.dataclass
class TokenizerSpec:
    """Everything needed to rebuild the tokenizer; embeddable in a container header."""
    tokenizer_json: str                 # a `tokenizers.Tokenizer` serialised with to_str()
    chat_template: str | None = None    # jinja2 source, as in tokenizer_config.json
    bos_token: str | None = None
    eos_token: str | None = None
    add_bos: bool = False               # prepend BOS when encoding a prompt

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, path=None) -> "TokenizerSpec":
        """From a container header's `tokenizer` object; wrong field types are refused here."""
        if not isinstance(d, dict):
            raise CorruptionDetected("tokenizer is not an object", path)
        spec = cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})
        if spec.add_bos is None:
            spec.add_bos = False
        spec.check_types(path)
        return spec

    def check_types(self, path=None) -> None:
        for name in ("chat_template", "bos_token", "eos_token"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise UnsupportedModel(f"tokenizer {name} is {_short(v)}, not a string", path)
        if not isinstance(self.tokenizer_json, str):
            raise UnsupportedModel("tokenizer_json is not a string", path)
        if not isinstance(self.add_bos, bool):
            raise UnsupportedModel(f"tokenizer add_bos is {_short(self.add_bos)}, not true or false", path)

    def check(self, path=None) -> None:
        """Everything a later Tokenizer(spec) would trip on, as one-line errors naming `path`."""
        self.check_types(path)
        hf_tokenizer(self.tokenizer_json, path)
        self.check_template(path)

    def check_template(self, path=None) -> None:
        if self.chat_template:
            _compile_template(self.chat_template, path)


def container_tokenizer(reader, path=None) -> "Tokenizer":
    """The tokenizer of an open container; the container lets go of its JSON (spec and header), so the
    string is freed once the tokenizer is built."""
    spec, reader.tokenizer = reader.tokenizer, None
    tok = reader.header.get("tokenizer")
    if isinstance(tok, dict):
        tok.pop("tokenizer_json", None)
    from tinyqmoe.memory import trim_heap

    tokenizer = Tokenizer(spec, path)
    reader.tokenizer = tokenizer.spec
    del spec, tok
    trim_heap()    # the string's memory too
    return tokenizer


def hf_tokenizer(tokenizer_json: str, path=None):
    """A `tokenizers.Tokenizer` from its JSON, or a one-line error naming `path`."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        return HFTokenizer.from_str(tokenizer_json)
    except Exception as exc:  # tokenizers raises plain Exception for every parse error
        raise UnsupportedModel(f"tokenizer JSON is not a valid tokenizers file ({_first_line(exc)})", path) from None


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# Tokens that end a turn or a document in the model families we run; used as stop tokens when present.
_STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<|eom_id|>")


class Tokenizer:
    """Built from a spec; keeps everything of it but the JSON (`spec.tokenizer_json` is ""): a 128K
    vocabulary's JSON is 9 MB, and parsing it leaves ~60 MB of freed heap, which is handed back."""

    def __init__(self, spec: TokenizerSpec, path=None):
        from tinyqmoe.memory import trim_heap

        spec.check_types(path)
        self.spec = dataclasses.replace(spec, tokenizer_json="")
        self.path = path
        self._tok = hf_tokenizer(spec.tokenizer_json, path)
        trim_heap()
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.bos_id = self._tok.token_to_id(spec.bos_token) if spec.bos_token else None
        self.eos_id = self._tok.token_to_id(spec.eos_token) if spec.eos_token else None
        stops = {self._tok.token_to_id(t) for t in _STOP_TOKENS} | {self.eos_id}
        self.stop_ids = frozenset(i for i in stops if i is not None)
        self._template = None

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; BOS is prepended when `add_bos` (default: the model's convention)."""
        if not isinstance(text, str):
            raise UsageError(f"text to encode is a {type(text).__name__}, not a str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: undecodable bytes from argv or a file
            raise UsageError(f"the text is not valid UTF-8 (an undecodable byte at character {exc.start})") from None
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if (self.spec.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, skip_special: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)

    # ---- chat
    @property
    def has_chat_template(self) -> bool:
        return bool(self.spec.chat_template)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages`, rendered as transformers' apply_chat_template renders it."""
        if self._template is None:
            self._template = _compile_template(self.spec.chat_template or _FALLBACK_TEMPLATE, self.path)
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.spec.bos_token or "", eos_token=self.spec.eos_token or "")
        except Exception as exc:  # the template's own raise_exception(), undefined names, type errors...
            raise UnsupportedModel(f"the chat template failed: {_first_line(exc)}", self.path) from None

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        # The template writes any BOS itself, so no special tokens are added on top.
        return self.encode(self.render_chat(messages, add_generation_prompt), add_bos=False)

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Turns a growing list of ids into text pieces, never splitting a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self._ids: list[int] = []
        self._emitted = 0  # characters of the decoded text already returned

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._tok.decode(self._ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return ""
        piece, self._emitted = text[self._emitted:], len(text)
        return piece


_FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _compile_template(source: str, path=None):
    """Compile a chat template the way transformers does (sandboxed, trim/lstrip blocks)."""
    from jinja2.exceptions import TemplateError, TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise UnsupportedModel(f"the chat template does not compile (line {exc.lineno}: {exc.message})", path) from None
    except RecursionError:
        raise UnsupportedModel("the chat template is nested too deeply", path) from None
