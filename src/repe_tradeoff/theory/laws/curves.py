"""The laws fitted to one curve: every candidate, local fits, comparison and landmarks.

An alignment curve gets the whole-grid candidates, ``tanh_monotone`` on its monotone range,
a local ``linear`` fit and the slope at ``r = 0``; a helpfulness curve gets the corollary and
its alternatives, a local ``quadratic``, its peak and where it reaches chance. See
:mod:`repe_tradeoff.theory.io.fits` for the choices.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from repe_tradeoff.runs import Curve
from repe_tradeoff.theory.laws.fitting import (
    FitResult,
    block,
    covariance_ci,
    effective_sigma,
    fit_law,
    percentile_ci,
)
from repe_tradeoff.theory.laws.forms import (
    Law,
    alignment_laws,
    helpfulness_laws,
    linear_law,
    quadratic_law,
    tanh_law,
)
from repe_tradeoff.theory.laws.replicates import FitContext

#: Half-width of the window of the local quadratic helpfulness fit (the paper's |r| <= 2).
DEFAULT_WINDOW = 2.0
#: The fewest norms a local (windowed) fit uses before the window is widened.
MIN_WINDOW_POINTS = 5
#: "Helpfulness reaches chance" means it falls to ``chance + CHANCE_DELTA``.
CHANCE_DELTA = 0.02
#: Tolerance (fraction of the curve's span) of the monotone range of an alignment curve.
MONOTONE_TOL = 0.05
#: Below this R² a whole-grid form is never marked `best` (it is shown, not starred).
MIN_BEST_R2 = 0.5


def _min_window(norms: np.ndarray, m: int) -> float:
    a = np.sort(np.abs(norms))
    return float(a[min(m, a.size) - 1]) if a.size else 0.0


def _fit_range(law: Law, curve: Curve, sigma, span: tuple[float, float]) -> FitResult:
    return fit_law(law, curve.norms, curve.mean, sigma, span=span)


def _fit_block(ctx: FitContext, curve: Curve, res: FitResult, sigma, window=None, span=None) -> dict:
    _, method = ctx.replicates(curve)
    if res.ok and method == "bootstrap-items":
        params = ctx.boot_params(curve, res, sigma, window, span) or []
        ok = [p for p in params if p is not None]
        ci = {
            name: percentile_ci([p[j] for p in ok]) for j, name in enumerate(res.law.params)
        }
        return block(res, ci=ci, ci_method="bootstrap-items", n_boot=len(ok))
    return block(res, ci=covariance_ci(res), ci_method="covariance")


def _compare(results: dict[str, FitResult]) -> tuple[dict, str | None, str | None]:
    ok = {k: v for k, v in results.items() if v.ok and v.window is None and v.span is None}
    if not ok:
        return {}, None, None
    amin = min(v.aic for v in ok.values())
    bmin = min(v.bic for v in ok.values())
    table = {
        k: {"aic": v.aic, "bic": v.bic, "delta_aic": v.aic - amin, "delta_bic": v.bic - bmin}
        for k, v in ok.items()
    }
    # a form that explains less than MIN_BEST_R2 of the variance is no law, whatever its AIC
    fits = {k: v for k, v in ok.items() if v.r2 is not None and v.r2 >= MIN_BEST_R2}
    best = min(fits, key=lambda k: fits[k].aic) if fits else None
    best_bic = min(fits, key=lambda k: fits[k].bic) if fits else None
    return table, best, best_bic


def _warn_if_none_fits(ctx: FitContext, curve: Curve, results: dict[str, FitResult], best) -> None:
    r2 = [v.r2 for v in results.values()
          if v.ok and v.window is None and v.span is None and v.r2 is not None]
    if best is None and r2:
        ctx.warn(f"no whole-grid law fits {curve.metric} of {curve.task}: the highest R² is "
                 f"{max(r2):.3g}, below {MIN_BEST_R2:g}, so no form is marked best")


# ------------------------------------------------------------------ alignment
def monotone_range(r: np.ndarray, y: np.ndarray, direction: int) -> tuple[int, int]:
    """Indices ``[lo, hi]`` of the part of the grid where the curve runs in ``direction``.

    At large norms a steered model can break down and its behavior score turn back (the
    paper's own curves do). The range runs from the outermost point within
    ``MONOTONE_TOL`` (as a fraction of the curve's span) of the curve's low end to the
    outermost point within it of the high end, in the direction the curve rises.
    """
    lo_v, hi_v = float(np.min(y)), float(np.max(y))
    tol = MONOTONE_TOL * (hi_v - lo_v)
    near_low = np.flatnonzero(y <= lo_v + tol)
    near_high = np.flatnonzero(y >= hi_v - tol)
    if direction > 0:
        lo, hi = int(near_low.min()), int(near_high.max())
    else:
        lo, hi = int(near_high.min()), int(near_low.max())
    if hi - lo < 2:
        return 0, r.size - 1
    return lo, hi


def fit_alignment(ctx: FitContext, curve: Curve, align_window: float | None):
    sigma = effective_sigma(curve.stderr)
    laws = alignment_laws()
    results = {name: fit_law(law, curve.norms, curve.mean, sigma) for name, law in laws.items()}
    fits = {name: _fit_block(ctx, curve, res, sigma) for name, res in results.items()}
    out: dict[str, Any] = {"kind": "alignment", "metric": curve.metric, "fits": fits}
    # the tanh on the monotone part of the grid
    whole = results["tanh"]
    if whole.ok and whole.params[0] != 0:
        d0 = 1 if whole.params[0] > 0 else -1
    else:
        d0 = 1 if np.polyfit(curve.norms, curve.mean, 1)[0] >= 0 else -1  # a flat curve counts as rising
    lo, hi = monotone_range(curve.norms, curve.mean, d0)
    rng_ = (float(curve.norms[lo]), float(curve.norms[hi]))
    tanh = _fit_range(tanh_law(), curve, sigma, rng_)
    out["monotone_range"] = list(rng_)
    out["trimmed"] = bool(lo > 0 or hi < curve.norms.size - 1)
    fits["tanh_monotone"] = _fit_block(ctx, curve, tanh, sigma, span=rng_)
    fits["tanh_monotone"]["range"] = list(rng_)
    if out["trimmed"]:
        ctx.warn(
            f"{curve.task}: the alignment curve turns back outside r in "
            f"[{rng_[0]:g}, {rng_[1]:g}]; the efficient regime uses the tanh fitted there"
        )
    # local linear fit
    w5 = _min_window(curve.norms, MIN_WINDOW_POINTS)
    if align_window is not None:
        w = float(align_window)
    elif tanh.ok and abs(tanh.params[0]) > 0:
        w = max(w5, min(1.0 / abs(float(tanh.params[0])), float(np.max(np.abs(curve.norms)))))
    else:
        w = w5
    lin = fit_law(linear_law("linear"), curve.norms, curve.mean, sigma, window=w)
    fits["linear"] = _fit_block(ctx, curve, lin, sigma, window=w)
    # slope at zero from the tanh
    if tanh.ok:
        a, b = (float(x) for x in tanh.params)
        th = math.tanh(b)
        value = a * (1 - th**2)
        _, method = ctx.replicates(curve)
        ci, ci_method = None, "covariance"
        if method == "bootstrap-items":
            ps = ctx.boot_params(curve, tanh, sigma, span=rng_) or []
            ci = percentile_ci(
                [p[0] * (1 - math.tanh(p[1]) ** 2) for p in ps if p is not None]
            )
            ci_method = "bootstrap-items"
        elif tanh.cov is not None:
            grad = np.array([1 - th**2, -2 * a * th * (1 - th**2)])
            var = float(grad @ tanh.cov @ grad)
            if np.isfinite(var) and var >= 0:
                half = 1.959963984540054 * math.sqrt(var)
                ci = [value - half, value + half]
        out["slope_at_zero"] = {
            "value": value, "ci": ci, "ci_method": ci_method, "model": "tanh_monotone"
        }
        out["direction"] = 1 if a > 0 else -1
        out["transition_norm"] = -b / a if a != 0 else None
    else:
        out["slope_at_zero"] = {"value": None, "ci": None, "error": tanh.error}
        out["direction"] = None
    table, best, best_bic = _compare(results)
    _warn_if_none_fits(ctx, curve, results, best)
    out.update(comparison=table, best=best, best_bic=best_bic)
    results["tanh_monotone"] = tanh
    return out, results, sigma


# ---------------------------------------------------------------- helpfulness
def _chance_norms(curve: Curve, chance: float, results: dict[str, FitResult], best: str | None):
    level = chance + CHANCE_DELTA
    out: dict[str, Any] = {"delta": CHANCE_DELTA, "level": level}
    r, y = curve.norms, curve.mean
    z = int(np.argmin(np.abs(r)))
    measured: dict[str, float | None] = {"negative": None, "positive": None}
    for side, rng_ in (("negative", range(z, -1, -1)), ("positive", range(z, r.size))):
        for i in rng_:
            if (side == "negative" and r[i] > 0) or (side == "positive" and r[i] < 0):
                continue
            if y[i] <= level:
                measured[side] = float(r[i])
                break
    out["measured"] = measured

    def fitted(res: FitResult) -> dict:
        d: dict[str, Any] = {"model": res.law.name, "negative": None, "positive": None}
        for side, sgn, t_max in (
            ("negative", -1.0, float(-r.min()) if r.min() < 0 else 0.0),
            ("positive", 1.0, float(r.max()) if r.max() > 0 else 0.0),
        ):
            if t_max <= 0:
                continue
            t = np.linspace(0.0, t_max, 4001)
            v = res.predict(sgn * t)
            hit = np.flatnonzero(v <= level)
            if hit.size:
                d[side] = float(sgn * t[hit[0]])
        return d

    if best is not None and results[best].ok:
        out["fitted"] = fitted(results[best])
    if "corollary" in results and results["corollary"].ok:
        out["corollary"] = fitted(results["corollary"])
    return out


def fit_helpfulness(
    ctx: FitContext, curve: Curve, *, chance: float, k: int | None, window: float
):
    sigma = effective_sigma(curve.stderr)
    laws: dict[str, Law] = helpfulness_laws(chance, k)
    results = {name: fit_law(law, curve.norms, curve.mean, sigma) for name, law in laws.items()}
    fits = {name: _fit_block(ctx, curve, res, sigma) for name, res in results.items()}
    out: dict[str, Any] = {"metric": curve.metric, "chance": chance, "fits": fits}
    n_in = int(np.count_nonzero(np.abs(curve.norms) <= window + 1e-9))
    w = float(window)
    if n_in < MIN_WINDOW_POINTS:
        m = max(MIN_WINDOW_POINTS, math.ceil(curve.norms.size / 3))
        w = _min_window(curve.norms, m)
        step = float(np.min(np.diff(curve.norms))) if curve.norms.size > 1 else 0.0
        ctx.warn(
            f"The local quadratic of {curve.task} ({curve.metric}) needs {MIN_WINDOW_POINTS} "
            f"norms near 0, but the window |r| ≤ {window:.3g} holds {n_in} of this grid's norms "
            f"(spaced {step:.3g} apart, up to |r| = {np.max(np.abs(curve.norms)):.3g}), so it is "
            f"fitted on |r| ≤ {w:.3g}, the central third of the grid."
        )
    quad = fit_law(quadratic_law(), curve.norms, curve.mean, sigma, window=w)
    fits["quadratic"] = _fit_block(ctx, curve, quad, sigma, window=w)
    fits["quadratic"]["window_requested"] = float(window)
    table, best, best_bic = _compare(results)
    _warn_if_none_fits(ctx, curve, results, best)
    out.update(comparison=table, best=best, best_bic=best_bic)
    i_peak = int(np.argmax(curve.mean))
    out["peak"] = {"norm": float(curve.norms[i_peak]), "value": float(curve.mean[i_peak])}
    out["chance_norm"] = _chance_norms(curve, chance, results, best)
    return out, results, sigma
