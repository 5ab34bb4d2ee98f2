"""Typed model of ``fits.json``'s ``breakdown`` entry (see :mod:`repe_tradeoff.theory.checks.breakdown`),
strict like the rest of :mod:`repe_tradeoff.runs.schema`, which includes it in ``FitsFile``."""

from __future__ import annotations

from typing import Literal

from repe_tradeoff.runs.schema.base import Strict


class BreakPoint(Strict):
    """The first norm on one side of r = 0 where the model no longer produces language."""

    norm: float
    criterion: Literal["perplexity", "kl", "response_logprob"]
    task: str
    value: float
    threshold: float
    last_fluent: float | None
    text: str


class Breakdown(Strict):
    """Where steering breaks the model, per side; norms from there outward are left out of every fit."""

    rule: str
    perplexity_factor: float
    kl_limit: float
    response_logprob_drop: float
    signals: list[str]
    negative: BreakPoint | None
    positive: BreakPoint | None
    excluded_norms: list[float]
