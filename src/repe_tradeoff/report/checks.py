"""The assumption checks in plain words: A1, A3 and the prediction, each with its numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from repe_tradeoff.report._io import RunFiles
from repe_tradeoff.report.content import fmt, fmt_ci
from repe_tradeoff.runs.schema import (
    A1Check,
    A3Check,
    Prediction,
)
from repe_tradeoff.theory.checks import assumptions as diag
from repe_tradeoff.theory.io.response import (
    RESPONSE_PASS_RMSE,
    RESPONSE_WARN_RMSE,
    VALIDATION_MAX_LOSS,
)

THRESHOLDS_NOTE = (
    "Each status is the one fits.json gives the check: "
    f"A1 pass if the through-origin R² of the logit shift against |r| is ≥ {diag.A1_PASS_R2} "
    f"and it does not saturate, warn if R² ≥ {diag.A1_WARN_R2}, else fail; "
    f"A3 pass if, over the smaller half of the norms, the median QQ correlation of X_i(r) "
    f"with a normal is ≥ {diag.A3_PASS_QQ}, the median |mean|/std ≤ {diag.A3_PASS_MEAN} and "
    f"std ≈ σ·|r| has R² ≥ {diag.A3_PASS_FIT_R2}; warn if the QQ correlation is ≥ "
    f"{diag.A3_WARN_QQ} and |mean|/std ≤ {diag.A3_WARN_MEAN}, else fail; the prediction from "
    f"the probe norms pass if its helpfulness RMSE, over the norms where the measured "
    f"helpfulness is within {VALIDATION_MAX_LOSS} of its r = 0 value, is ≤ {RESPONSE_PASS_RMSE}, "
    f"warn if ≤ {RESPONSE_WARN_RMSE}, else fail; the paper's prediction pass if its RMSE "
    f"against the measured helpfulness is ≤ {diag.PREDICTION_PASS_RMSE}, warn if "
    f"≤ {diag.PREDICTION_WARN_RMSE}, else fail. N/A: the check could not be made (the reason "
    "is given)."
)


@dataclass
class Check:
    task: str
    name: str
    status: str  # pass | warn | fail | n/a
    detail: str


def _a1_details(a1: A1Check) -> list[str]:
    bits = []
    if a1.slope is not None:
        bits.append(f"slope {fmt(a1.slope)} logit units per unit |r|")
    if a1.r2 is not None:
        bits.append(f"R² = {fmt(a1.r2, 3)}")
    bits.append(f"saturates at |r| ≈ {fmt(a1.saturates_at)}" if a1.saturates_at is not None
                else "no saturation")
    return bits


def _a3_details(a3: A3Check) -> list[str]:
    bits = []
    if a3.sigma is not None:
        bits.append(f"σ = {fmt(a3.sigma)} {fmt_ci(a3.sigma_ci)}".rstrip())
    if a3.sigma_fit_r2 is not None:
        bits.append(f"std ≈ σ·|r| with R² = {fmt(a3.sigma_fit_r2, 3)}")
    if a3.qq_corr_median is not None:
        bits.append(f"median QQ correlation {fmt(a3.qq_corr_median, 4)}")
    if a3.mean_over_std_median is not None:
        bits.append(f"median |mean|/std {fmt(a3.mean_over_std_median, 2)}")
    return bits


def _prediction_details(p: Prediction) -> list[str]:
    bits = []
    if p.rmse is not None:
        bits.append(f"RMSE {fmt(p.rmse, 3)}")
    if p.max_abs_error is not None:
        bits.append(f"max |error| {fmt(p.max_abs_error, 3)}")
    bits.append(f"over {len(p.norms)} norms")
    if p.rmse_closed_form is not None:
        bits.append(f"closed-form corollary RMSE {fmt(p.rmse_closed_form, 3)}")
    return bits


CHECK_NAMES = {
    "a1": "A1 — logit shift ‖U·δ_r‖ grows linearly in |r|",
    "a3": "A3 — X_i(r) is zero-mean Gaussian with std σ·|r|",
    "response": "Prediction — helpfulness predicted from the probe norms 0, ±h, ±2h vs measured",
    "prediction": "Paper's prediction — helpfulness predicted from A1/A3 vs measured",
}


VERDICTS = {"pass": "holds", "warn": "holds only roughly", "fail": "does not hold"}


def check_sentence(c: Check) -> str:
    """A check in plain words with its numbers: "On basic-qa, A1 (...) holds: slope 3, ..."."""
    what, _, claim = c.name.partition(" — ")
    verdict = VERDICTS.get(c.status)
    if verdict is None:
        return f"On {c.task}, {what} ({claim}) {c.detail.replace('not checked', 'was not checked')}."
    return f"On {c.task}, {what} ({claim}) {verdict}: {c.detail}."


def _response_check(task: str, block: Any) -> Check:
    name = CHECK_NAMES["response"]
    if block is None:
        return Check(task, name, "n/a", "not computed: see the notes above")
    from repe_tradeoff.report.prediction import response_lines

    if not block.validation:
        return Check(task, name, "n/a", "the grid measured only the probe norms; "
                     + "; ".join(x.removeprefix(f"{task}: ") for x in response_lines(task, block)))
    return Check(task, name, block.status or "n/a",
                 "; ".join(x.removeprefix(f"{task}: ") for x in response_lines(task, block)))


def checks(run: RunFiles) -> list[Check]:
    """The A1, A3 and prediction checks of every helpfulness task (see THRESHOLDS_NOTE)."""
    if run.fits is None:
        return []
    out: list[Check] = []
    for task, tf in run.fits.helpfulness_tasks().items():
        for key, details in (("a1", _a1_details), ("a3", _a3_details),
                             ("response", None), ("prediction", _prediction_details)):
            if key == "response":
                out.append(_response_check(task, tf.response))
                continue
            block = getattr(tf.checks, key)
            if block is None:
                out.append(Check(task, CHECK_NAMES[key], "n/a",
                                 "not checked: see the notes above"))
            elif getattr(block, "error", None):
                out.append(Check(task, CHECK_NAMES[key], "n/a",
                                 f"could not be checked: {block.error}"))
            else:
                out.append(Check(task, CHECK_NAMES[key], block.status or "n/a",
                                 "; ".join(details(block))))
    return out
