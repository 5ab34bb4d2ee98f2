"""The tradeoff of one alignment and one helpfulness task: Pareto frontier, efficient
regime (with its bootstrap interval) and the recommended norm."""

from __future__ import annotations

from typing import Any

import numpy as np

from repe_tradeoff.theory.decisions.budget import budget_recommendation
from repe_tradeoff.theory.decisions.regime import common_grid, pareto, recommend, regime_end
from repe_tradeoff.theory.laws.fitting import CI_LEVEL, FitResult
from repe_tradeoff.theory.laws.forms import THEORY_CURVES
from repe_tradeoff.theory.laws.replicates import FitContext

#: The corollary is used for the efficient regime unless the best AIC beats it by more.
PREFER_COROLLARY_DAIC = 2.0


def _regime_model(results: dict[str, FitResult], best: str | None) -> str | None:
    """The AIC-best theory curve when it is within ``PREFER_COROLLARY_DAIC`` of the best."""
    if best is None:
        return None
    theory = [n for n in THEORY_CURVES if n in results and results[n].ok]
    if theory:
        top = min(theory, key=lambda n: results[n].aic)
        if results[top].aic - results[best].aic <= PREFER_COROLLARY_DAIC:
            return top
    return best


def _censored_ci(vals: list[float]) -> list[float | None]:
    """Percentile interval of values where ``inf`` means "beyond the grid" (reported as null)."""
    x = np.sort(np.asarray(vals, dtype=float))
    q = (1 - CI_LEVEL) / 2
    out: list[float | None] = []
    for p in (q, 1 - q):
        pos = p * (x.size - 1)
        i, f = int(np.floor(pos)), pos - np.floor(pos)
        j = min(i + 1, x.size - 1)
        if not (np.isfinite(x[i]) and np.isfinite(x[j])):
            out.append(None)
        else:
            out.append(float(x[i] + f * (x[j] - x[i])))
    return out


def tradeoff(ctx: FitContext, a_task: str, align_fit, h_task: str, help_fit, lam: float) -> dict:
    run = ctx.run
    _, a_results, a_sigma = align_fit
    h_blk, h_results, h_sigma = help_fit
    a_curve = run.curve(a_task, "alignment")
    h_curve = run.curve(h_task, "helpfulness")
    out: dict[str, Any] = {}
    grid, ia, ih = common_grid(a_curve.norms, h_curve.norms)
    if grid.size:
        out["pareto"] = pareto(grid, a_curve.mean[ia], h_curve.mean[ih])
    else:
        ctx.warn("alignment and helpfulness share no grid norm: no Pareto frontier")
    tanh = a_results["tanh_monotone"]
    whole = {n: r for n, r in h_results.items() if r.ok and r.window is None and r.span is None}
    lowest_aic = min(whole, key=lambda n: whole[n].aic) if whole else None  # the regime needs a curve
    h_name = _regime_model(h_results, h_blk.get("best") or lowest_aic)
    if not tanh.ok or h_name is None:
        ctx.warn("the tanh or every helpfulness fit failed: no efficient regime")
        return out
    h_res = h_results[h_name]
    direction = 1 if tanh.params[0] > 0 else -1
    lo, hi = tanh.span if tanh.span is not None else (-np.inf, np.inf)
    t_max = min(
        float(np.max(direction * a_curve.norms)),
        float(np.max(direction * h_curve.norms)),
        float(hi if direction > 0 else -lo),
    )
    chance = h_blk["chance"]
    if t_max <= 0:
        ctx.warn(
            "the grid has no norm on the side where alignment increases: "
            "no efficient regime or recommendation"
        )
        return out

    def end(pa, ph):
        return regime_end(
            lambda r: tanh.law(r, *pa),
            lambda r: h_res.law(r, *ph),
            lam=lam,
            direction=direction,
            t_max=t_max,
        )

    max_norm = end(tanh.params, h_res.params)
    ba = ctx.boot_params(a_curve, tanh, a_sigma, span=tanh.span)
    bh = ctx.boot_params(h_curve, h_res, h_sigma)
    ci = None
    ci_method = None
    if ba is not None and bh is not None:
        vals = []
        for pa, ph in zip(ba, bh):
            if pa is None or ph is None:
                continue
            e = end(pa, ph)
            vals.append(np.inf if e is None else e)
        if len(vals) >= 2:
            ci = _censored_ci(vals)
        m_a = ctx.replicates(a_curve)[1]
        m_h = ctx.replicates(h_curve)[1]
        ci_method = m_a if m_a == m_h else f"{m_a}+{m_h}"
    out["efficient_regime"] = {
        "lambda": lam,
        "direction": direction,
        "max_norm": max_norm,
        "end_norm": None if max_norm is None else direction * max_norm + 0.0,
        "ci": ci,
        "ci_method": ci_method,
        "searched_up_to": t_max,
        "alignment_model": "tanh_monotone",
        "alignment_range": None if tanh.span is None else list(tanh.span),
        "helpfulness_model": h_name,
        "helpfulness_task": h_task,
        "alignment_task": a_task,
        "chance": chance,
    }
    if max_norm is None:
        ctx.warn(
            f"the efficient regime does not end inside the grid (|r| <= {t_max:g}); "
            "max_norm is null"
        )
    if grid.size:
        ra, ma = ctx.replicates(a_curve)
        rh, mh = ctx.replicates(h_curve)
        rec = recommend(
            grid,
            a_curve.mean[ia],
            h_curve.mean[ih],
            direction=direction,
            max_norm=max_norm,
            lam=lam,
            align_reps=None if ra is None else ra[:, ia],
            help_reps=None if rh is None else rh[:, ih],
            ci_method=ma if ma == mh else f"{ma}+{mh}",
        )
        out["lambda_recommendation"] = {**rec, "rule": "lambda"}
    return out


def _layers_text(layers: list[int]) -> str:
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}-{layers[-1]}"
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(str(x) for x in layers)


def steering_where(ctx: FitContext, a_task: str) -> tuple[str, float | None]:
    """" on layers 8-15, pca vector of harmfulness" and 1 / the mean residual norm."""
    cfg = ctx.run.config
    if cfg is None:
        return "", None
    vec = cfg.vector
    layers = list(getattr(cfg, "layers", None) or (vec.layers if vec else None) or [])
    method = f"{vec.method} " if vec is not None and vec.method else ""
    where = (f" on {_layers_text(layers)}, " if layers else " ") + f"{method}vector of {a_task}"
    residual = list((cfg.norm_scale.residual_norm if cfg.norm_scale else {}).values())
    per_r = 1.0 / float(np.mean(residual)) if residual and np.mean(residual) > 0 else None
    return where, per_r


def budget_tradeoff(ctx: FitContext, a_task: str, h_task: str, budget: str) -> dict | None:
    """The budgeted recommendation between two tasks (see :mod:`.budget`), or None."""
    run = ctx.run
    a_curve, h_curve = run.curve(a_task, "alignment"), run.curve(h_task, "helpfulness")
    if a_curve is None or h_curve is None:
        return None
    grid, ia, ih = common_grid(a_curve.norms, h_curve.norms)
    if not grid.size:
        return None
    ra, ma = ctx.replicates(a_curve)
    rh, mh = ctx.replicates(h_curve)
    where, per_r = steering_where(ctx, a_task)
    return budget_recommendation(
        grid, a_curve.mean[ia], h_curve.mean[ih], budget=budget,
        align_reps=None if ra is None else ra[:, ia], help_reps=None if rh is None else rh[:, ih],
        ci_method=ma if ma == mh else f"{ma}+{mh}", relative_per_r=per_r, where=where)
