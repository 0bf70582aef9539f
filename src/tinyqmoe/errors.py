"""A closed catalogue of the errors tinyqmoe raises on bad input.

Every error a user can cause is a `TinyQMoEError`: the CLI prints it as one line
(`tinyqmoe: <path>: <problem>`) and exits with code 2; `--debug` shows the traceback.
`assert` is used only for internal invariants, never for input checking.
"""
from __future__ import annotations


class TinyQMoEError(Exception):
    """Base class: a clean, one-line error about something the user supplied."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None, field: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = " ".join(str(self.message).split())  # one line, whatever the message held
        return f"{self.path}: {text}" if self.path else text


class UsageError(TinyQMoEError):
    """A bad argument or option value (unknown codec, bits, a missing output directory...)."""


class ModelNotFound(TinyQMoEError):
    """A path or model name that does not exist or is not a model."""


class UnsupportedModel(TinyQMoEError):
    """A model we cannot run: another architecture, an unknown tensor type..."""


class FormatError(TinyQMoEError):
    """Base class for errors in a file's bytes (container, GGUF, safetensors...)."""


class CorruptionDetected(FormatError):
    """A field holds a value the format forbids."""


class ChecksumWrong(FormatError):
    """A chunk's checksum does not match its bytes."""


class TruncatedInput(FormatError):
    """The file ends before a structure it announces."""


class UnsupportedParameter(FormatError):
    """A valid but unsupported value: a newer format version, an unknown codec id..."""


class MemoryBudgetError(TinyQMoEError):
    """No way to run the model inside the requested memory budget."""


class FetchError(TinyQMoEError):
    """A pinned asset could not be downloaded or failed its hash check."""
