"""The library's exception types, in one place and importing nothing.

Library code raises these; only the command line (`bench.cli`) turns a `BenchError` into a
one-line message and exit code 2, so a notebook or a test gets an exception it can catch.
Messages name the config key or argument and the value, never a command-line flag. Import them
from here (`from bench.errors import ConfigError`), the only module that defines or exports them.
"""

from __future__ import annotations

__all__ = ["BenchError", "ConfigError", "DataError", "EvaluatorError", "InputError", "ReportError", "StudyError",
           "TrackingError"]


class BenchError(Exception):
    """Any problem the user can fix (bad input, missing data, unusable store): no traceback, exit 2.

    `field`, when given, is the argument or option the message blames (e.g. "run_id", "few_per_class"),
    so a front end can point at its own spelling of it (the CLI adds the flag).
    """

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        self.field = field


class InputError(BenchError):
    """A bad argument (a path, a run id, an option value) that is none of the more specific errors."""


class ConfigError(BenchError, ValueError):
    """A bad configuration value: names the field, the value and why."""


class StudyError(ConfigError):
    """A malformed study file: names the file, the key and the reason."""


class DataError(BenchError):
    """A data file is missing, corrupt or cannot be fetched."""


class EvaluatorError(BenchError, ValueError):
    """The shipped evaluator is missing or its weights do not match their SHA-256."""


class TrackingError(BenchError, RuntimeError):
    """The tracking store cannot be used (unreachable, unwritable)."""


class ReportError(BenchError, ValueError):
    """Bad report input (unknown study, bad filter or baseline): names the value."""
