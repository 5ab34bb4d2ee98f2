"""The library's errors: every error a user can cause (and fix) derives from RepeTradeoffError.

Each stage raises its own subclass (ModelError, VectorError, DatasetError, SweepError, TheoryError,
ReportError, ConfigError, …) with a message that says what is wrong and what to do. They also derive
from ValueError, so code that catches ValueError keeps working. The CLI prints these as one-line
messages; any other exception is a bug and is shown as one.
"""

from __future__ import annotations


class RepeTradeoffError(ValueError):
    """Base of every error this library raises for bad input; the message names the fix."""


class SpecError(RepeTradeoffError):
    """A layer spec, norm grid or other short specification that cannot be parsed."""


class SweepError(RepeTradeoffError):
    """A sweep that cannot start, continue or resume; the message says what to do."""
