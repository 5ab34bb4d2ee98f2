"""The one exception the theory package raises for bad input."""

from __future__ import annotations

from repe_tradeoff.errors import RepeTradeoffError


class TheoryError(RepeTradeoffError):
    """A run folder or an argument the theory functions cannot work with.

    The message says what is wrong and what to do about it, so a command-line
    front end can print it as it is.
    """
