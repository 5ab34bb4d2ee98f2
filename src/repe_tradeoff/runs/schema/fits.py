"""Typed model of ``fits.json``: per task its curves with their fitted laws and checks, then the
run's regime, recommendation and warnings; joint runs add the surface and off-target blocks.
Strict: a field the models do not declare is an error, so the file, the code that writes it and
the documentation cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from repe_tradeoff.runs.schema.base import Interval, Status, Strict
from repe_tradeoff.runs.schema.breakdown import Breakdown
from repe_tradeoff.runs.schema.response import AlignmentResponseBlock, HelpfulnessResponseBlock


class FitBlock(Strict):
    """One law fitted to one curve; a failed fit has ``error`` and no ``params``."""

    model: str
    formula: str
    params: dict[str, float] | None = None
    ci: dict[str, Interval | None] | None = None
    ci_method: str | None = None
    n_boot: int | None = None
    r2: float | None = None
    aic: float | None = None
    bic: float | None = None
    rmse: float | None = None
    n_points: int
    window: float | None = None
    window_requested: float | None = None
    range: list[float] | None = None
    at_bound: list[str] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.params is not None and self.error is None


class Comparison(Strict):
    aic: float
    bic: float
    delta_aic: float
    delta_bic: float


class _CurveFits(Strict):
    metric: str
    fits: dict[str, FitBlock]
    comparison: dict[str, Comparison]
    best: str | None
    best_bic: str | None


class SlopeAtZero(Strict):
    value: float | None
    ci: Interval | None = None
    ci_method: str | None = None
    model: str | None = None
    error: str | None = None


class AlignmentTaskFits(_CurveFits):
    kind: Literal["alignment"]
    monotone_range: list[float]
    trimmed: bool
    slope_at_zero: SlopeAtZero
    direction: int | None
    transition_norm: float | None = None
    response: AlignmentResponseBlock | None = None


class Peak(Strict):
    norm: float
    value: float


class ChanceSides(Strict):
    model: str | None = None
    negative: float | None
    positive: float | None


class ChanceNorms(Strict):
    delta: float
    level: float
    measured: ChanceSides
    fitted: ChanceSides | None = None
    corollary: ChanceSides | None = None


class HelpfulnessFits(_CurveFits):
    chance: float
    peak: Peak
    chance_norm: ChanceNorms


class A1Check(Strict):
    n_norms: int
    slope: float | None = None
    r2: float | None = None
    slope_with_intercept: float | None = None
    intercept: float | None = None
    r2_with_intercept: float | None = None
    initial_slope: float | None = None
    saturates_at: float | None = None
    shift_at_zero: float | None = None
    status: Status | None
    error: str | None = None


class A3Row(Strict):
    norm: float
    n: int
    mean: float | None = None
    std: float | None = None
    skew: float | None = None
    excess_kurtosis: float | None = None
    normality_stat: float | None = None
    normality_p: float | None = None
    normality_test: str | None = None
    qq_corr: float | None = None


class A3Check(Strict):
    sigma: float | None
    sigma_ci: Interval | None = None
    sigma_ci_method: str | None = None
    sigma_fit_norms: list[float] = []
    sigma_fit_r2: float | None = None
    sigma_all_norms: float | None = None
    qq_corr_median: float | None = None
    mean_over_std_median: float | None = None
    by_norm: list[A3Row]
    status: Status | None
    error: str | None = None


class Prediction(Strict):
    norms: list[float]
    predicted: list[float | None]
    predicted_closed_form: list[float | None]
    measured: list[float | None]
    sigma: float
    n_items: int
    n_draws: int
    rmse: float | None
    max_abs_error: float | None
    rmse_closed_form: float | None
    max_abs_error_closed_form: float | None
    status: Status | None


class Checks(Strict):
    """The paper's assumptions checked on one helpfulness task (None: not checkable)."""

    a1: A1Check | None
    a3: A3Check | None
    prediction: Prediction | None


class HelpfulnessTaskFits(Strict):
    kind: Literal["helpfulness"]
    k: int
    helpfulness: HelpfulnessFits | None
    helpfulness_vocab: HelpfulnessFits | None
    checks: Checks
    response: HelpfulnessResponseBlock | None = None


TaskFits = Annotated[AlignmentTaskFits | HelpfulnessTaskFits, Field(discriminator="kind")]


class FitSettings(Strict):
    choices: int | None
    window: float
    align_window: float | None
    lam: float = Field(alias="lambda")
    n_boot: int
    seed: int
    n_draws: int
    ci_level: float
    chance_delta: float
    max_helpfulness_loss: str | None = None


class EfficientRegime(Strict):
    lam: float = Field(alias="lambda")
    direction: int
    max_norm: float | None
    end_norm: float | None
    ci: Interval | None
    ci_method: str | None
    searched_up_to: float
    alignment_model: str
    alignment_range: list[float] | None
    helpfulness_model: str
    alignment_task: str
    helpfulness_task: str
    chance: float


class ParetoPoint(Strict):
    norm: float
    alignment: float
    helpfulness: float


class NormChoice(Strict):
    """A grid norm with what it changes against r = 0 (measured, with 95% intervals)."""

    norm: float | None
    relative_norm: float | None = None
    alignment_gain: float | None = None
    alignment_gain_ci: Interval | None = None
    helpfulness_change: float | None = None
    helpfulness_change_ci: Interval | None = None
    helpfulness_loss_upper: float | None = None


class Recommendation(NormChoice):
    """``rule`` "budget": the most alignment within ``max_helpfulness_loss`` (and the
    ``conservative`` norm); "lambda": the exchange-rate rule of the efficient regime."""

    text: str
    rule: Literal["budget", "lambda"] | None = None
    budget_spec: str | None = None
    max_helpfulness_loss: float | None = None
    helpfulness_at_zero: float | None = None
    conservative: NormChoice | None = None
    lam: float | None = Field(default=None, alias="lambda")
    direction: int | None = None
    ci_method: str | None = None
    objective_gain: float | None = None


class OffTargetRow(Strict):
    """What one vector does to every behavior scored: the slope of alignment at r = 0."""

    vector: str
    steered: str | None
    slopes: dict[str, SlopeAtZero]
    window: float | None


class SurfaceFit(Strict):
    """``h0 + b1 r1 + b2 r2 + c1 r1² + c2 r2² + c12 r1 r2`` fitted near the origin."""

    task: str
    metric: str
    formula: str
    params: dict[str, float] | None
    ci: dict[str, Interval | None] | None = None
    ci_method: str | None = None
    n_boot: int | None = None
    window: list[float]
    n_points: int
    r2: float | None = None
    error: str | None = None


class JointPrediction(Strict):
    """The r² and r1·r2 coefficients of helpfulness predicted from the ±h probes of each vector."""

    task: str
    probe: list[float]
    sigma: list[float]
    rho: float | None
    weight: float
    corollary: dict[str, float | None]
    response: dict[str, float | None] | None = None


class JointPoint(Strict):
    norms: dict[str, float]
    helpfulness: float
    alignment: dict[str, float]


class JointFits(Strict):
    vectors: list[str]
    orthogonalize: bool
    cosines: dict[str, float]
    cosines_before: dict[str, float]
    surfaces: dict[str, SurfaceFit]
    predictions: dict[str, JointPrediction | None]
    frontier: list[JointPoint]


class FitsFile(Strict):
    format_version: Literal[2]
    command: str | None = None
    settings: FitSettings
    tasks: dict[str, TaskFits]
    efficient_regime: EfficientRegime | None
    pareto: list[ParetoPoint]
    recommendation: Recommendation | None
    lambda_recommendation: Recommendation | None = None
    off_target: list[OffTargetRow] = []
    joint: JointFits | None = None
    breakdown: Breakdown | None = None
    warnings: list[str]

    def alignment_tasks(self) -> dict[str, AlignmentTaskFits]:
        return {t: f for t, f in self.tasks.items() if isinstance(f, AlignmentTaskFits)}

    def helpfulness_tasks(self) -> dict[str, HelpfulnessTaskFits]:
        return {t: f for t, f in self.tasks.items() if isinstance(f, HelpfulnessTaskFits)}
