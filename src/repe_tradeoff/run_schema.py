"""Typed models of ``config.json`` and ``fits.json`` (documented in ``docs/run-files.md``).

``fits.json`` is strict: a field the models do not declare is an error, so the file, the
code that writes it and the documentation cannot drift apart unnoticed. ``config.json``
accepts extra keys (a sweep records more about itself than any reader needs).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from repe_tradeoff.breakdown_schema import Breakdown

FITS_FORMAT_VERSION = 2

Status = Literal["pass", "warn", "fail"]
Interval = list[float | None]  # [low, high]; null: beyond the grid or unknown


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- config.json
class TaskConfig(_Open):
    name: str
    kind: Literal["alignment", "helpfulness", "fluency"]
    n_items: int | None = None
    n_choices: Annotated[int, Field(ge=2)] | None = None
    format: str | None = None
    scorer: str | None = None
    template: str | None = None
    max_new_tokens: int | None = None
    sha256: str | None = None
    instruction: str | None = None


class VectorInfo(_Open):
    sha256: str | None = None
    layers: list[int] | None = None
    method: str | None = None
    behavior: str | None = None


class NormScale(_Open):
    residual_norm: dict[str, float] = {}
    relative_per_unit_r: dict[str, float] = {}
    total_per_unit_r: float | None = None


class JointVectorInfo(_Open):
    """One vector of a joint sweep: the name its norms are recorded under, and its grid."""

    name: str
    sha256: str | None = None
    layers: list[int] | None = None
    method: str | None = None
    behavior: str | None = None
    norms: list[float] = []
class GridStep(_Strict):
    """One step of the grid's history: the norms it added and how they were chosen."""

    source: Literal["grid", "auto", "refine"]
    added: list[float]


class GridSide(_Strict):
    end: float
    criterion: Literal["helpfulness", "alignment", "limit"]
    predicted: float | None = None
    helpfulness_fallen: float | None = None
    alignment: dict[str, float] = {}


class GridEvaluation(_Strict):
    step: Literal["probe", "bracket", "bisect"]
    norm: float
    helpfulness: dict[str, float] = {}
    alignment: dict[str, float] = {}


class AutoGrid(_Strict):
    """How ``norms: auto`` found the grid (docs/run-files.md)."""

    points: int
    search_items: int
    probe: float
    range: list[float]
    fraction: float
    margin: float
    sides: dict[Literal["negative", "positive"], GridSide]
    passes: int
    evaluations: list[GridEvaluation]


class RunConfig(_Open):
    format_version: int = 1
    model: str | None = None
    vector: VectorInfo | None = None
    vectors: list[JointVectorInfo] = []
    orthogonalize: bool = False
    cosines: dict[str, float] = {}
    cosines_before: dict[str, float] = {}
    steered_behavior: str | None = None
    norms: list[float] = []
    grid_history: list[GridStep] = []
    auto_grid: AutoGrid | None = None
    tasks: list[TaskConfig] = []
    norm_scale: NormScale | None = None
    command: str | None = None
    config_hash: str | None = None


# --------------------------------------------------------------------------- fits.json
class FitBlock(_Strict):
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


class Comparison(_Strict):
    aic: float
    bic: float
    delta_aic: float
    delta_bic: float


class _CurveFits(_Strict):
    metric: str
    fits: dict[str, FitBlock]
    comparison: dict[str, Comparison]
    best: str | None
    best_bic: str | None


class SlopeAtZero(_Strict):
    value: float | None
    ci: Interval | None = None
    ci_method: str | None = None
    model: str | None = None
    error: str | None = None


# --------------------------------------------------------------------------- the response
class ResponseEstimate(_Strict):
    """A mean over items with its 95 % bootstrap interval."""

    value: float | None
    ci: Interval | None = None


class ResponseValidation(_Strict):
    """Predicted against measured for one metric over the compared ``norms``."""

    metric: str
    scope: Literal["loss-window", "all", "trust-radius"]
    norms: list[float]
    rmse: float
    max_error: float
    window: list[float]
    status: Status | None = None


class _ResponseBase(_Strict):
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


class HelpfulnessDecomposition(_Strict):
    p0: ResponseEstimate
    linear: ResponseEstimate
    spread: ResponseEstimate
    drift: ResponseEstimate
    quadratic: ResponseEstimate
    spread_share: ResponseEstimate


class HelpfulnessResponseBlock(_ResponseBase):
    """The second-order response of a helpfulness task (see :mod:`repe_tradeoff.theory.response`)."""

    kind: Literal["helpfulness"] = "helpfulness"
    trust_radius_vocab: float | None = None
    decomposition: HelpfulnessDecomposition
    status: Status | None = None


class AlignmentResponseBlock(_ResponseBase):
    """The second-order response of an alignment task: its slope at 0, 2σ'(Δ0)·Δ'."""

    kind: Literal["alignment"] = "alignment"
    slope_at_zero: ResponseEstimate


ResponseBlock = Annotated[HelpfulnessResponseBlock | AlignmentResponseBlock, Field(discriminator="kind")]


class PredictedPoint(_Strict):
    """One line of ``predicted.jsonl``: a points.jsonl row predicted from the probe, with its band."""

    task: str
    kind: Literal["alignment", "helpfulness"]
    metric: str
    norm: float
    mean: float
    low: float
    high: float
    n: int


class ResponseFile(_Strict):
    """``response.json``, written by ``predict``: the response of every task of the probe run."""

    format_version: Literal[1] = 1
    command: str | None = None
    predicted_norms: list[float]
    tasks: dict[str, ResponseBlock]
    warnings: list[str] = []


class AlignmentTaskFits(_CurveFits):
    kind: Literal["alignment"]
    monotone_range: list[float]
    trimmed: bool
    slope_at_zero: SlopeAtZero
    direction: int | None
    transition_norm: float | None = None
    response: AlignmentResponseBlock | None = None


class Peak(_Strict):
    norm: float
    value: float


class ChanceSides(_Strict):
    model: str | None = None
    negative: float | None
    positive: float | None


class ChanceNorms(_Strict):
    delta: float
    level: float
    measured: ChanceSides
    fitted: ChanceSides | None = None
    corollary: ChanceSides | None = None


class HelpfulnessFits(_CurveFits):
    chance: float
    peak: Peak
    chance_norm: ChanceNorms


class A1Check(_Strict):
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


class A3Row(_Strict):
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


class A3Check(_Strict):
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


class Prediction(_Strict):
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


class Checks(_Strict):
    """The paper's assumptions checked on one helpfulness task (None: not checkable)."""

    a1: A1Check | None
    a3: A3Check | None
    prediction: Prediction | None


class HelpfulnessTaskFits(_Strict):
    kind: Literal["helpfulness"]
    k: int
    helpfulness: HelpfulnessFits | None
    helpfulness_vocab: HelpfulnessFits | None
    checks: Checks
    response: HelpfulnessResponseBlock | None = None


TaskFits = Annotated[AlignmentTaskFits | HelpfulnessTaskFits, Field(discriminator="kind")]


class FitSettings(_Strict):
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


class EfficientRegime(_Strict):
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


class ParetoPoint(_Strict):
    norm: float
    alignment: float
    helpfulness: float


class NormChoice(_Strict):
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


class OffTargetRow(_Strict):
    """What one vector does to every behavior scored: the slope of alignment at r = 0."""

    vector: str
    steered: str | None
    slopes: dict[str, SlopeAtZero]
    window: float | None


class SurfaceFit(_Strict):
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


class JointPrediction(_Strict):
    """The r² and r1·r2 coefficients of helpfulness predicted from the ±h probes of each vector."""

    task: str
    probe: list[float]
    sigma: list[float]
    rho: float | None
    weight: float
    corollary: dict[str, float | None]
    response: dict[str, float | None] | None = None


class JointPoint(_Strict):
    norms: dict[str, float]
    helpfulness: float
    alignment: dict[str, float]


class JointFits(_Strict):
    vectors: list[str]
    orthogonalize: bool
    cosines: dict[str, float]
    cosines_before: dict[str, float]
    surfaces: dict[str, SurfaceFit]
    predictions: dict[str, JointPrediction | None]
    frontier: list[JointPoint]


class FitsFile(_Strict):
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


# --------------------------------------------------------------------------- baseline.json
class BaselineRow(_Strict):
    """One condition of the prompting comparison: means over items with 95% intervals."""

    condition: str
    instruction: bool
    norm: float
    alignment: float | None
    alignment_ci: Interval | None = None
    n_alignment: int
    helpfulness: float | None
    helpfulness_ci: Interval | None = None
    n_helpfulness: int


class BaselineFile(_Strict):
    format_version: Literal[1]
    instruction: str
    placement: Literal["prefix"]
    recommended_norm: float
    alignment_task: str | None
    helpfulness_task: str | None
    ci_method: str | None
    n_boot: int
    rows: list[BaselineRow]

    def row(self, instruction: bool, steered: bool) -> BaselineRow | None:
        return next((r for r in self.rows if r.instruction == instruction
                     and (r.norm != 0.0) == steered), None)


def model_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Field name (as written to JSON) → annotation, for documentation checks."""
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}
