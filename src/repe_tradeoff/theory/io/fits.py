"""``fit_run``: read a run folder, fit the theory, check it, and write ``fits.json``.

What is fitted (the formulas and their derivations are in :mod:`.laws`):

* every alignment task: ``tanh`` (and ``tanh_scaled``, ``linear_full``) on the whole grid,
  ``tanh_monotone`` on the monotone part of the grid, a ``linear`` fit on
  ``|r| ≤ align_window`` (default: the larger of ``1/|a|`` of ``tanh_monotone`` and the
  smallest window holding 5 norms), and the slope at ``r = 0`` from ``tanh_monotone``,
  ``a·(1 − tanh²(b))``;
* every helpfulness task's ``helpfulness`` (restricted to the ``k`` options, chance
  ``1/k``): the corollary and its alternatives on the whole grid, and a ``quadratic`` on
  ``|r| ≤ window`` (default 2.0, the paper's; when fewer than 5 norms lie inside, the
  central third of the grid, with a warning); ``helpfulness_vocab`` the same way with
  chance 0;
* ``best`` is the whole-grid model with the lowest AIC (``best_bic``: lowest BIC).

Norms where the model no longer produces language (:mod:`.breakdown`: perplexity of its own
continuations, KL on neutral text, or both forced-choice responses unlikely) are found first
and left out of everything above; ``breakdown`` in ``fits.json`` says where and why.

Intervals are 95%. With ``items.jsonl`` they are percentile intervals of a bootstrap over
items (each task's items resampled with replacement, the per-norm means recomputed, every
model refitted from its estimate; ``ci_method: "bootstrap-items"``). Without items, fit
parameters get Wald intervals from the fit's covariance (``"covariance"``) and the derived
quantities (efficient regime, gains) a parametric bootstrap that redraws each point from
``N(mean, stderr²)`` (``"bootstrap-parametric"``).

Alignment curves measured far out can turn back (a model steered too hard breaks down);
``tanh_monotone`` is the tanh fitted on ``monotone_range``, the part of the grid where the
curve runs one way (see :func:`monotone_range`), and is the alignment curve of the slope at
``r = 0``, the efficient regime (searched inside that range) and the local linear window.

For helpfulness the efficient regime uses the AIC-best theory curve (``corollary``,
``corollary_exact`` and their shifted forms, ``corollary_paper``) unless another model's AIC
is lower by more than 2 (then that model); see :mod:`.regime`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from repe_tradeoff.runs import RunFileError, read_run, write_fits
from repe_tradeoff.runs.schema import FITS_FORMAT_VERSION, FitsFile
from repe_tradeoff.theory.checks import assumptions as diag
from repe_tradeoff.theory.checks.breakdown import detect_breakdown, fluent_part
from repe_tradeoff.theory.decisions.budget import DEFAULT_BUDGET, parse_budget
from repe_tradeoff.theory.decisions.tradeoff import budget_tradeoff, tradeoff
from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.io.response import fit_response
from repe_tradeoff.theory.laws.curves import (
    CHANCE_DELTA,
    DEFAULT_WINDOW,
    fit_alignment,
    fit_helpfulness,
)
from repe_tradeoff.theory.laws.fitting import CI_LEVEL
from repe_tradeoff.theory.laws.joint import fit_joint, off_target
from repe_tradeoff.theory.laws.replicates import FitContext, rng_for

FORMAT_VERSION = FITS_FORMAT_VERSION
__all__ = ["CHANCE_DELTA", "DEFAULT_WINDOW", "FORMAT_VERSION", "fit_run"]


def _checks(ctx: FitContext, task: str, n_boot: int, n_draws: int) -> dict:
    """Assumptions A1 and A3 of one helpfulness task and the helpfulness they predict."""
    run = ctx.run
    out: dict[str, Any] = {"a1": None, "a3": None, "prediction": None}
    shift = run.curve(task, "logit_shift")
    if shift is None:
        ctx.warn(f"{task}: no `logit_shift` points; assumption A1 not checked")
    else:
        out["a1"] = diag.check_a1(shift)
    items = run.items.get(task)
    if items is None:
        ctx.warn(f"{task}: no items in items.jsonl; A3 and the prediction need per-item scores")
        return out
    if items.scores is None:
        ctx.warn(f"{task}: items carry no `scores`; A3 and the prediction not computed")
        return out
    if items.norm_index(0.0) is None:
        ctx.warn(f"{task}: the grid has no r = 0; A3 and the prediction need the unsteered scores")
        return out
    a3 = diag.check_a3(items, rng_for(ctx.seed, "a3", task), n_boot=n_boot)
    out["a3"] = a3
    helpful = run.curve(task, "helpfulness")
    if a3 is None or a3.get("sigma") is None or helpful is None:
        return out
    out["prediction"] = diag.a3_helpfulness(
        items, float(a3["sigma"]), helpful, rng_for(ctx.seed, "predict", task), n_draws
    )
    return out


# ------------------------------------------------------------------- output
def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def fit_run(
    run_dir: Path,
    *,
    choices: int | None = None,
    window: float = DEFAULT_WINDOW,
    lam: float = 1.0,
    n_boot: int = 200,
    seed: int = 0,
    align_window: float | None = None,
    n_draws: int = 2000,
    command: str | None = None,
    max_helpfulness_loss: str | float = DEFAULT_BUDGET,
) -> dict:
    """Fit the theory to the run in ``run_dir``, write ``run_dir/fits.json`` and return it.

    ``choices``: the number of options ``k`` of helpfulness tasks that ``config.json`` does not
    give (default: the items' option count, else 4 with a warning). ``window``: half-width of
    the local quadratic helpfulness fit. ``lam``: the exchange rate λ (helpfulness units per
    alignment unit) of the efficient regime and the recommendation. ``n_boot``: bootstrap
    replicates (0: none). ``seed``: seeds every random draw. ``align_window``: half-width
    of the local linear alignment fit (default: see the module notes). ``n_draws``: Monte
    Carlo draws of the helpfulness prediction. ``command``: the command line that asked
    for the fit, recorded in ``fits.json`` for the report. ``max_helpfulness_loss``: the
    budget of the recommendation, absolute (``0.05``) or relative to r = 0 (``"5%"``); see
    :mod:`.budget`.

    Raises :class:`TheoryError` for a missing or malformed run folder or bad arguments.
    """
    if choices is not None and int(choices) < 2:
        raise TheoryError(f"choices must be at least 2 (got {choices})")
    if not (window > 0):
        raise TheoryError(f"window must be positive (got {window})")
    if align_window is not None and not (align_window > 0):
        raise TheoryError(f"align_window must be positive (got {align_window})")
    if not (lam >= 0) or not math.isfinite(lam):
        raise TheoryError(f"lambda must be a non-negative number (got {lam})")
    if int(n_boot) < 0:
        raise TheoryError(f"n_boot must be >= 0 (got {n_boot})")
    parse_budget(max_helpfulness_loss)
    run_dir = Path(run_dir)
    try:
        run = read_run(run_dir)
    except RunFileError as err:
        raise TheoryError(str(err)) from None
    warnings: list[str] = list(run.warnings)
    breakdown = detect_breakdown(run)
    for side in ("negative", "positive"):
        if breakdown and breakdown[side]:
            warnings.append(f"{breakdown[side]['text']}; r = {breakdown[side]['norm']:.4g} and beyond are left out of the fits")
    run = fluent_part(run, breakdown)
    ctx = FitContext(run, int(n_boot), int(seed), warnings)

    if run.joint is not None:
        return _fit_joint_run(run, ctx, window, command)
    align_tasks = [t for t in run.tasks_of_kind("alignment") if run.curve(t, "alignment")]
    help_tasks = [
        t
        for t in run.tasks_of_kind("helpfulness")
        if run.curve(t, "helpfulness") or run.curve(t, "helpfulness_vocab")
    ]
    if not align_tasks and not help_tasks:
        raise TheoryError(
            f"{run_dir / 'points.jsonl'} has no `alignment` or `helpfulness` points to fit "
            "(see docs/run-files.md)"
        )
    settings = {
        "choices": choices, "window": float(window), "align_window": align_window,
        "lambda": float(lam), "n_boot": int(n_boot), "seed": int(seed), "n_draws": int(n_draws),
        "ci_level": CI_LEVEL, "chance_delta": CHANCE_DELTA,
        "max_helpfulness_loss": str(max_helpfulness_loss).strip(),
    }
    tasks: dict[str, dict] = {}
    align_fits: dict[str, tuple[dict, dict, Any]] = {}
    for t in align_tasks:
        align_fits[t] = fit_alignment(ctx, run.curve(t, "alignment"), align_window)
        tasks[t] = align_fits[t][0]
    if not align_tasks:
        ctx.warn("no alignment points: no efficient regime or recommendation")

    help_fits: dict[str, tuple[dict, dict, Any]] = {}
    for t in help_tasks:
        k, note = run.resolve_k(t, choices)
        if note:
            ctx.warn(note)
        entry: dict[str, Any] = {"kind": "helpfulness", "k": k, "helpfulness": None}
        curve = run.curve(t, "helpfulness")
        if curve is not None:
            help_fits[t] = fit_helpfulness(ctx, curve, chance=1.0 / k, k=k, window=window)
            entry["helpfulness"] = help_fits[t][0]
        else:
            ctx.warn(f"{t}: no `helpfulness` points; only `helpfulness_vocab` is fitted")
        vocab = run.curve(t, "helpfulness_vocab")
        entry["helpfulness_vocab"] = (
            None if vocab is None
            else fit_helpfulness(ctx, vocab, chance=0.0, k=None, window=window)[0]
        )
        entry["checks"] = _checks(ctx, t, int(n_boot), int(n_draws))
        tasks[t] = entry
    if not help_tasks:
        ctx.warn("no helpfulness points: no efficient regime or recommendation")

    # the second-order response, from the probe norms 0, ±h, ±2h of this grid only
    for t, block in fit_response(run_dir, run.config, int(n_boot), int(seed), warnings).items():
        if t in tasks:
            tasks[t]["response"] = block

    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "command": command, "settings": settings, "tasks": tasks,
        "efficient_regime": None, "pareto": [], "recommendation": None, "breakdown": breakdown,
    }
    # the tradeoff is between the first alignment and the first helpfulness task of the run
    if align_tasks and help_tasks and help_tasks[0] in help_fits:
        a_task, h_task = align_tasks[0], help_tasks[0]
        out.update(tradeoff(ctx, a_task, align_fits[a_task], h_task, help_fits[h_task], lam))
        out["recommendation"] = budget_tradeoff(ctx, a_task, h_task, str(max_helpfulness_loss))
    out["off_target"] = off_target(run, n_boot=ctx.n_boot, seed=ctx.seed)
    out["warnings"] = warnings
    fits = FitsFile.model_validate(_clean(out))
    write_fits(run_dir, fits)
    return fits.model_dump(mode="json", by_alias=True)


def _fit_joint_run(run, ctx: FitContext, window: float, command: str | None) -> dict:
    """fits.json of a joint sweep: off-target slopes along each vector, the joint surface, its
    prediction and the frontier (the one-vector fits need a one-vector run)."""
    settings = {
        "choices": None, "window": float(window), "align_window": None, "lambda": 1.0,
        "n_boot": ctx.n_boot, "seed": ctx.seed, "n_draws": 0, "ci_level": CI_LEVEL, "chance_delta": CHANCE_DELTA,
    }
    out = {
        "format_version": FORMAT_VERSION, "command": command, "settings": settings, "tasks": {},
        "efficient_regime": None, "pareto": [], "recommendation": None,
        "off_target": off_target(run, n_boot=ctx.n_boot, seed=ctx.seed),
        "joint": fit_joint(run, window=window, n_boot=ctx.n_boot, seed=ctx.seed, warn=ctx.warn),
        "warnings": ctx.warnings,
    }
    fits = FitsFile.model_validate(_clean(out))
    write_fits(run.run_dir, fits)
    return fits.model_dump(mode="json", by_alias=True)
