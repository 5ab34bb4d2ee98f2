"""Typed models of the second-order response: the ``response`` block of each task in ``fits.json``,
``response.json`` and the rows of ``predicted.jsonl``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from repe_tradeoff.runs.schema.base import Interval, Status, Strict


class ResponseEstimate(Strict):
    """A mean over items with its 95 % bootstrap interval."""

    value: float | None
    ci: Interval | None = None


class ResponseValidation(Strict):
    """Predicted against measured for one metric over the compared ``norms``."""

    metric: str
    scope: Literal["loss-window", "all", "trust-radius"]
    norms: list[float]
    rmse: float
    max_error: float
    window: list[float]
    status: Status | None = None


class _ResponseBase(Strict):
    probe_h: float
    probe_norms: list[float]
    #: "saturating" (five probe norms) or "quadratic" (three); see theory.response_model
    model: Literal["quadratic", "saturating"] | None = None
    tolerance: float
    n_items: int
    n_dropped: int
    trust_radius: float | None = None
    trust_searched_to: float | None = None
    validation: list[ResponseValidation] = []


class HelpfulnessDecomposition(Strict):
    p0: ResponseEstimate
    linear: ResponseEstimate
    spread: ResponseEstimate
    drift: ResponseEstimate
    quadratic: ResponseEstimate
    spread_share: ResponseEstimate


class HelpfulnessResponseBlock(_ResponseBase):
    """The second-order response of a helpfulness task (see :mod:`repe_tradeoff.theory.response.prediction`)."""

    kind: Literal["helpfulness"] = "helpfulness"
    trust_radius_vocab: float | None = None
    decomposition: HelpfulnessDecomposition
    status: Status | None = None


class AlignmentResponseBlock(_ResponseBase):
    """The second-order response of an alignment task: its slope at 0, 2σ'(Δ0)·Δ'."""

    kind: Literal["alignment"] = "alignment"
    slope_at_zero: ResponseEstimate


ResponseBlock = Annotated[HelpfulnessResponseBlock | AlignmentResponseBlock, Field(discriminator="kind")]


class PredictedPoint(Strict):
    """One line of ``predicted.jsonl``: a points.jsonl row predicted from the probe, with its band."""

    task: str
    kind: Literal["alignment", "helpfulness"]
    metric: str
    norm: float
    mean: float
    low: float
    high: float
    n: int


class ResponseFile(Strict):
    """``response.json``, written by ``predict``: the response of every task of the probe run."""

    format_version: Literal[1] = 1
    command: str | None = None
    predicted_norms: list[float]
    tasks: dict[str, ResponseBlock]
    warnings: list[str] = []
