"""Typed models of ``config.json`` and ``fits.json`` (documented in ``docs/run-files.md``).

``fits.json`` is strict: a field the models do not declare is an error, so the file, the
code that writes it and the documentation cannot drift apart unnoticed. ``config.json``
accepts extra keys (a sweep records more about itself than any reader needs).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class VectorInfo(_Open):
    sha256: str | None = None
    layers: list[int] | None = None
    method: str | None = None
    behavior: str | None = None


class NormScale(_Open):
    residual_norm: dict[str, float] = {}
    relative_per_unit_r: dict[str, float] = {}
    total_per_unit_r: float | None = None


class RunConfig(_Open):
    format_version: int = 1
    model: str | None = None
    vector: VectorInfo | None = None
    norms: list[float] = []
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


class AlignmentTaskFits(_CurveFits):
    kind: Literal["alignment"]
    monotone_range: list[float]
    trimmed: bool
    slope_at_zero: SlopeAtZero
    direction: int | None
    transition_norm: float | None = None


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


class Recommendation(_Strict):
    norm: float | None
    text: str
    lam: float | None = Field(default=None, alias="lambda")
    direction: int | None = None
    ci_method: str | None = None
    alignment_gain: float | None = None
    alignment_gain_ci: Interval | None = None
    helpfulness_change: float | None = None
    helpfulness_change_ci: Interval | None = None
    objective_gain: float | None = None


class BreakPoint(_Strict):
    """The first norm on one side of r = 0 where the model no longer produces language."""

    norm: float
    criterion: Literal["perplexity", "kl", "response_logprob"]
    task: str
    value: float
    threshold: float
    last_fluent: float | None
    text: str


class Breakdown(_Strict):
    """Where steering breaks the model, per side; norms from there outward are left out of every fit."""

    rule: str
    perplexity_factor: float
    kl_limit: float
    response_logprob_drop: float
    signals: list[str]
    negative: BreakPoint | None
    positive: BreakPoint | None
    excluded_norms: list[float]


class FitsFile(_Strict):
    format_version: Literal[2]
    command: str | None = None
    settings: FitSettings
    tasks: dict[str, TaskFits]
    efficient_regime: EfficientRegime | None
    pareto: list[ParetoPoint]
    recommendation: Recommendation | None
    breakdown: Breakdown | None = None
    warnings: list[str]

    def alignment_tasks(self) -> dict[str, AlignmentTaskFits]:
        return {t: f for t, f in self.tasks.items() if isinstance(f, AlignmentTaskFits)}

    def helpfulness_tasks(self) -> dict[str, HelpfulnessTaskFits]:
        return {t: f for t, f in self.tasks.items() if isinstance(f, HelpfulnessTaskFits)}


def model_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Field name (as written to JSON) → annotation, for documentation checks."""
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}
