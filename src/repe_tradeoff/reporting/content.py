"""What a report says, as plain data: law rows, recommendation, configuration, commands
(the checks are in :mod:`.checks`).

The HTML page and summary.md both render these, so they cannot disagree.
Nothing here recomputes a fit: every number comes from fits.json or points.jsonl.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from repe_tradeoff.reporting._io import RunFiles, _finite
from repe_tradeoff.reporting.breakdown import breakdown_lines
from repe_tradeoff.runs.schema import (
    AlignmentTaskFits,
    FitBlock,
    HelpfulnessFits,
)
from repe_tradeoff.theory.decisions.budget import conservative_text, sig
from repe_tradeoff.theory.decisions.regime import lambda_words


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
        if k in ("command", "commands", "tasks", "auto_grid", "grid_history", "sequential"):  # shown as grid_sentence
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
            "plateau": "nothing measured changed by {margin:g} over a doubling of the norm",
            "limit": "neither had happened by the largest norm searched"}


def grid_sentence(run: RunFiles) -> str | None:
    """One sentence on how the grid was found (``norms: auto``) and grown, from config.json."""
    sequential = run.config.get("sequential") if isinstance(run.config, dict) else None
    if isinstance(sequential, dict) and sequential.get("summary"):  # the sequential plan says it in one sentence
        return str(sequential["summary"])
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


def title_names(run: RunFiles) -> tuple[str, str, str]:
    """(model, behavior, helpfulness task) names for the title."""
    behavior = run.alignment_task or "—"
    tasks = run.helpfulness_tasks
    helpful = ", ".join(tasks) if tasks else "—"
    return run.model_name, behavior, helpful


def notes(run: RunFiles) -> list[str]:
    found = run.problems + run.data.warnings + (run.fits.warnings if run.fits else [])
    return list(dict.fromkeys(found))
