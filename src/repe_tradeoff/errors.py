"""The errors a user can cause (and fix); the CLI prints them as messages, not tracebacks.

Every error class of the library (ModelError, VectorError, DatasetError, SweepError, TheoryError,
ReportError, ConfigError, …) subclasses ValueError, as do the parse errors of layer specs and
norm grids, so catching ValueError covers them without importing every stage at start-up.
"""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    return (ValueError, FileNotFoundError)


class SweepError(ValueError):
    """A sweep that cannot start, continue or resume; the message says what to do."""
