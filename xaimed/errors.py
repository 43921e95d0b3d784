"""One error hierarchy for everything a user can get wrong.

Every error raised for a user carries one sentence that says what went wrong, where (case, file,
config key) and what to do. The CLI catches ``XaimedError`` once at the command boundary and prints
it without a traceback; anything else is a bug in xaimed and keeps its traceback.
"""

from __future__ import annotations


class XaimedError(Exception):
    """Base of every error xaimed raises for a user mistake or bad input."""


class ConfigError(XaimedError):
    """The configuration is invalid; ``problems`` lists each one with its YAML key path."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class InputError(XaimedError):
    """An input volume cannot be read or is not what the model expects."""


class ModelError(XaimedError):
    """The model cannot be loaded or run as configured."""


class MethodError(XaimedError):
    """An attribution method cannot run on this model or input as configured."""


class OutOfMemoryError(MethodError):
    """Work does not fit in memory even after the engine's retries with smaller batches."""


class OutputError(XaimedError):
    """An output cannot be written."""
