"""What a report says, as plain data: law rows, checks, recommendation, commands.

The HTML page and summary.md both render these, so they cannot disagree.
Nothing here recomputes a fit: every number comes from fits.json or points.jsonl.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from repe_tradeoff.run_schema import (
    A1Check,
    A3Check,
    AlignmentTaskFits,
    FitBlock,
    HelpfulnessFits,
    Prediction,
)
from repe_tradeoff.theory import diagnostics as diag
from repe_tradeoff.theory.budget import conservative_text, sig
from repe_tradeoff.theory.regime import lambda_words
from repe_tradeoff.theory.response_run import (
    RESPONSE_PASS_RMSE,
    RESPONSE_WARN_RMSE,
    VALIDATION_MAX_LOSS,
)

from ._io import RunFiles, _finite
from .breakdown import breakdown_lines

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


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table: 4 significant digits, '—' when missing."""
    v = _finite(x)
    if v is None:
        return "—"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def fmt_param(name: str, value: float | None, lo: float | None, hi: float | None) -> str:
    """``a = 0.4 [0.35, 0.45]``."""
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else ""
    return f"{name} = {fmt(value)}{ci}"


def fmt_ci(ci: list[float | None] | None) -> str:
    if ci is not None and len(ci) == 2 and None not in ci:
        return f"[{fmt(ci[0])}, {fmt(ci[1])}]"
    return ""


# --------------------------------------------------------------------------- laws
#: The forms the paper fits (shown first; the others are folded away).
PAPER_FORMS = ("tanh", "tanh_monotone", "linear", "corollary", "corollary_paper", "quadratic")

@dataclass
class LawRow:
    form: str
    formula: str | None = None
    # (name, value, ci_low, ci_high)
    params: list[tuple[str, float | None, float | None, float | None]] = field(
        default_factory=list
    )
    r2: float | None = None
    aic: float | None = None
    bic: float | None = None
    n_points: float | None = None
    window: float | None = None  # a local fit on |r| <= window
    span: tuple[float, float] | None = None  # a fit on part of the grid
    ci_method: str | None = None
    compared: bool = False  # one of the whole-grid fits AIC/BIC compare
    delta_aic: float | None = None
    delta_bic: float | None = None
    best: bool = False
    error: str | None = None
    at_bound: list[str] = field(default_factory=list)  # parameters stuck at a bound

    @property
    def fitted_on(self) -> str:
        if self.window is not None:
            return f"|r| ≤ {fmt(self.window)}"
        if self.span is not None:
            return f"r in [{fmt(self.span[0])}, {fmt(self.span[1])}]"
        return "whole grid"


@dataclass
class LawSection:
    title: str
    block_key: str  # where the curve sits in fits.json, e.g. "tasks.basic-qa.helpfulness"
    task: str
    problem: str | None
    rows: list[LawRow]
    extras: list[str]  # one-line facts: slope at zero, chance level, ...

    @property
    def compared(self) -> list[LawRow]:
        """The whole-grid fits AIC/BIC compare (fitted or failed), lowest AIC first."""
        rows = [r for r in self.rows if r.compared]
        return sorted(rows, key=lambda r: (r.error is not None,
                                           r.aic if r.aic is not None else math.inf))

    @property
    def winner(self) -> str | None:
        return next((r.form for r in self.rows if r.best), None)


def _law_row(form: str, fit: FitBlock, curve: AlignmentTaskFits | HelpfulnessFits) -> LawRow:
    cmp = curve.comparison.get(form)
    row = LawRow(form, fit.formula, r2=fit.r2, aic=fit.aic, bic=fit.bic, n_points=fit.n_points,
                 window=fit.window, span=tuple(fit.range) if fit.range else None,
                 ci_method=fit.ci_method, best=(form == curve.best), error=fit.error,
                 at_bound=list(fit.at_bound or []))
    # a failed whole-grid fit is still one of the compared forms
    row.compared = cmp is not None or (not fit.ok and fit.window is None and fit.range is None)
    if cmp is not None:
        row.delta_aic, row.delta_bic = cmp.delta_aic, cmp.delta_bic
    if fit.ok:
        cis = fit.ci or {}
        for name, value in fit.params.items():
            lo, hi = cis.get(name) or (None, None)
            row.params.append((name, value, lo, hi))
    elif row.error is None:
        row.error = "no parameters"
    return row


def _rows(curve: AlignmentTaskFits | HelpfulnessFits) -> list[LawRow]:
    return [_law_row(form, fit, curve) for form, fit in curve.fits.items()]


def _alignment_section(task: str, block: AlignmentTaskFits) -> LawSection:
    extras = []
    s0 = block.slope_at_zero
    if s0.value is not None:
        model = f", from {s0.model}" if s0.model else ""
        extras.append(f"slope at r = 0: {fmt(s0.value)} {fmt_ci(s0.ci)}".rstrip()
                      + f" (alignment per unit r{model})")
    elif s0.error:
        extras.append(f"slope at r = 0: not available ({s0.error})")
    if block.transition_norm is not None:
        extras.append(f"transition (alignment 0) at r = {fmt(block.transition_norm)}")
    if block.trimmed:
        lo, hi = block.monotone_range
        extras.append(f"the curve turns back outside r in [{fmt(lo)}, {fmt(hi)}]")
    return LawSection(f"alignment — {task}", f"tasks.{task}", task, None, _rows(block), extras)


def _helpfulness_section(task: str, curve: HelpfulnessFits, k: int) -> LawSection:
    extras = []
    if curve.metric != "helpfulness_vocab":
        extras.append(f"k = {k} options")
    extras.append(f"chance level {fmt(curve.chance)}")
    extras.append(f"measured peak {fmt(curve.peak.value)} at r = {fmt(curve.peak.norm)}")
    return LawSection(f"helpfulness — {task} ({curve.metric})",
                      f"tasks.{task}.{curve.metric}", task, None, _rows(curve), extras)


def law_sections(run: RunFiles) -> list[LawSection]:
    """One section per fitted curve of every task, in fits.json's order."""
    if run.fits is None:
        return []
    out: list[LawSection] = []
    for task, block in run.fits.tasks.items():
        if isinstance(block, AlignmentTaskFits):
            out.append(_alignment_section(task, block))
            continue
        for curve in (block.helpfulness, block.helpfulness_vocab):
            if curve is not None:
                out.append(_helpfulness_section(task, curve, block.k))
    return out


# --------------------------------------------------------------------------- recommendation
@dataclass
class Recommendation:
    text: str
    ok: bool
    extras: list[str]


def recommendation(run: RunFiles) -> Recommendation:
    """The answer: the budgeted norm (the headline), then the conservative norm, the λ rule and
    the efficient regime as further lines."""
    if run.fits is None:
        return Recommendation(
            "No recommendation yet: this run has no usable fits.json (run `repe-tradeoff fit`).",
            False, [])
    extras = []
    rec = run.fits.recommendation
    if rec is not None:
        cons = conservative_text(rec.model_dump(by_alias=True))
        if cons:
            extras.append(cons)
    lam = run.fits.lambda_recommendation
    if lam is not None:
        extras.append(f"Exchange-rate rule: {lam.text.strip()}")
    er = run.fits.efficient_regime
    if er is not None:
        lam_txt = f" at {lambda_words(er.lam)}"
        side = " on the negative side" if er.end_norm is not None and er.end_norm < 0 else ""
        if er.max_norm is None:
            extras.append(f"Efficient regime: does not end inside the grid (searched up to "
                          f"|r| = {fmt(er.searched_up_to, 3)}){lam_txt}")
        elif er.max_norm <= 0:
            extras.append(f"Efficient regime: empty{lam_txt}")
        else:
            extras.append(
                f"Efficient regime: |r| ≤ {fmt(er.max_norm, 3)}{side} {_ci3(er.ci)}".rstrip()
                + f"{lam_txt}: the alignment gained outweighs the helpfulness lost")
    extras += breakdown_lines(run)
    if rec is None:
        return Recommendation("No recommendation: fits.json has none (see its warnings).",
                              False, extras)
    return Recommendation(rec.text.strip(), rec.norm is not None, extras)


def _ci3(ci) -> str:
    return f"[{sig(ci[0])}, {sig(ci[1])}]" if ci and len(ci) == 2 and None not in ci else ""


# --------------------------------------------------------------------------- checks
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
    from .prediction import response_lines

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


# --------------------------------------------------------------------------- config
def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value and prefix != "tasks":
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            name = v.get("name", i) if isinstance(v, dict) else i
            _flatten(f"{prefix}[{name}]", v, out)
    elif isinstance(value, (list, tuple)):
        out.append((prefix, ", ".join(fmt_scalar(v) for v in value)))
    else:
        out.append((prefix, fmt_scalar(value)))


def fmt_scalar(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return f"{v:g}" if isinstance(v, float) else str(v)
    return json.dumps(v, ensure_ascii=False)


def config_rows(run: RunFiles) -> list[tuple[str, str]]:
    """config.json flattened into (key, value) rows (``command`` is shown elsewhere)."""
    out: list[tuple[str, str]] = []
    for k, v in run.config.items():
        if k in ("command", "commands", "tasks", "auto_grid", "grid_history"):  # shown as grid_sentence
            continue
        _flatten(str(k), v, out)
    return out


def task_rows(run: RunFiles) -> list[tuple[str, str, str]]:
    """config.json's tasks as (name, kind, other settings) rows."""
    out = []
    for t in run.config.get("tasks", []):
        rest: list[tuple[str, str]] = []
        for k, v in t.items():
            if k not in ("name", "kind"):
                _flatten(str(k), v, rest)
        out.append((fmt_scalar(t.get("name", "—")), fmt_scalar(t.get("kind", "—")),
                    "; ".join(f"{k} = {v}" for k, v in rest)))
    return out


_STOPPED = {"helpfulness": "helpfulness had fallen {fraction:.0%} of the way to chance",
            "alignment": "alignment was within {margin:g} of its plateau",
            "limit": "neither had happened by the largest norm searched"}


def grid_sentence(run: RunFiles) -> str | None:
    """One sentence on how the grid was found (``norms: auto``) and grown, from config.json."""
    cfg = run.data.config
    if cfg is None or cfg.auto_grid is None:
        return None
    g = cfg.auto_grid
    sides = "; ".join(
        f"the {name} side ends at r = {side.end:g}, where "
        + _STOPPED[side.criterion].format(fraction=g.fraction, margin=g.margin)
        for name, side in sorted(g.sides.items()))
    grown = [step for step in cfg.grid_history[1:] if step.added]
    more = f", then {sum(len(s.added) for s in grown)} norm(s) added by {len(grown)} later sweep(s)" if grown else ""
    return (f"The grid was found from the model's response: {g.points} norms from r = {g.range[0]:g} to "
            f"{g.range[1]:g} ({sides}), searched in {g.passes} batched evaluations on {g.search_items} "
            f"items per task{more}.")


# --------------------------------------------------------------------------- reproduce
def reproduce_commands(run: RunFiles) -> tuple[list[str], bool]:
    """The commands that remake this run, and whether config.json recorded the first one.

    The commands are the ones the run files recorded, never rebuilt from settings: the
    ``command`` of config.json (``run`` and ``demo`` also fit and report), then the
    ``command`` of fits.json (else a plain ``fit``) and ``report``.
    """
    run_arg = shlex.quote(str(run.run_dir))
    made = run.data.config.command if run.data.config else None
    fit = run.fits.command if run.fits and run.fits.command else f"repe-tradeoff fit {run_arg}"
    tail = [fit, f"repe-tradeoff report {run_arg}"]
    if made is None:
        return tail, False
    if made.split()[:2] in (["repe-tradeoff", "run"], ["repe-tradeoff", "demo"]):
        return [made], True
    return [made, *tail], True


# --------------------------------------------------------------------------- generations
def generation_table(run: RunFiles) -> tuple[list[float], list[tuple[str, dict[float, str]]]]:
    """(norms, [(prompt, {norm: text})]) from generations.json, prompts in file order."""
    norms: set[float] = set()
    rows: dict[str, dict[float, str]] = {}
    for g in run.generations:
        prompt = g.get("prompt")
        r = _finite(g.get("norm"))
        text = g.get("text")
        if prompt is None or r is None or text is None:
            continue
        norms.add(r)
        cell = rows.setdefault(str(prompt), {})
        cell[r] = (cell[r] + "\n\n—\n\n" + str(text)) if r in cell else str(text)
    return sorted(norms), list(rows.items())


# --------------------------------------------------------------------------- names
def title_names(run: RunFiles) -> tuple[str, str, str]:
    """(model, behavior, helpfulness task) names for the title."""
    behavior = run.alignment_task or "—"
    tasks = run.helpfulness_tasks
    helpful = ", ".join(tasks) if tasks else "—"
    return run.model_name, behavior, helpful


def notes(run: RunFiles) -> list[str]:
    found = run.problems + run.data.warnings + (run.fits.warnings if run.fits else [])
    return list(dict.fromkeys(found))
