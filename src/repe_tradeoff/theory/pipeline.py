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
import warnings as _warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from repe_tradeoff.run_schema import FITS_FORMAT_VERSION, FitsFile
from repe_tradeoff.runfiles import Curve, RunData, RunFileError, read_run, write_fits

from . import diagnostics as diag
from .errors import TheoryError
from .fitting import (
    CI_LEVEL,
    FitResult,
    block,
    covariance_ci,
    effective_sigma,
    fit_law,
    percentile_ci,
    refit,
)
from .laws import (
    THEORY_CURVES,
    Law,
    alignment_laws,
    helpfulness_laws,
    linear_law,
    quadratic_law,
    tanh_law,
)
from .regime import common_grid, pareto, recommend, regime_end

FORMAT_VERSION = FITS_FORMAT_VERSION
#: Half-width of the window of the local quadratic helpfulness fit (the paper's |r| <= 2).
DEFAULT_WINDOW = 2.0
#: The fewest norms a local (windowed) fit uses before the window is widened.
MIN_WINDOW_POINTS = 5
#: "Helpfulness reaches chance" means it falls to ``chance + CHANCE_DELTA``.
CHANCE_DELTA = 0.02
#: The corollary is used for the efficient regime unless the best AIC beats it by more.
PREFER_COROLLARY_DAIC = 2.0
#: Tolerance (fraction of the curve's span) of the monotone range of an alignment curve.
MONOTONE_TOL = 0.05


def _rng(seed: int, *labels: str) -> np.random.Generator:
    return np.random.default_rng([int(seed)] + [zlib.crc32(lab.encode()) for lab in labels])


def _min_window(norms: np.ndarray, m: int) -> float:
    a = np.sort(np.abs(norms))
    return float(a[min(m, a.size) - 1]) if a.size else 0.0


class _Context:
    """Shared state of one ``fit_run``: bootstrap replicates and refits, cached."""

    def __init__(self, run: RunData, n_boot: int, seed: int, warnings: list[str]):
        self.run = run
        self.n_boot = n_boot
        self.seed = seed
        self.warnings = warnings
        self._idx: dict[str, np.ndarray] = {}
        self._reps: dict[tuple[str, str], tuple[np.ndarray | None, str | None]] = {}
        self._boot: dict[tuple, list[np.ndarray | None]] = {}

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    def replicates(self, curve: Curve) -> tuple[np.ndarray | None, str | None]:
        """``(n_boot, n_norms)`` replicates of the curve's means and how they were drawn."""
        key = (curve.task, curve.metric)
        if key in self._reps:
            return self._reps[key]
        out: tuple[np.ndarray | None, str | None] = (None, None)
        if self.n_boot > 0:
            out = self._item_replicates(curve) or self._parametric_replicates(curve)
        self._reps[key] = out
        return out

    def _item_replicates(self, curve: Curve):
        items = self.run.items.get(curve.task)
        if items is None or curve.metric not in items.values:
            return None
        cols = [items.norm_index(r) for r in curve.norms]
        if any(c is None for c in cols):
            self.warn(
                f"{curve.task}/{curve.metric}: items.jsonl lacks some norms of points.jsonl; "
                "intervals from standard errors instead"
            )
            return None
        mat = items.values[curve.metric][:, cols]
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            item_means = np.nanmean(mat, axis=0)
        diff = np.nanmax(np.abs(item_means - curve.mean)) if mat.size else 0.0
        if np.isfinite(diff) and diff > 1e-6:
            self.warn(
                f"{curve.task}/{curve.metric}: items.jsonl means differ from points.jsonl "
                f"(max |diff| = {diff:.3g}); bootstrap intervals resample the items"
            )
        if curve.task not in self._idx:
            n = mat.shape[0]
            self._idx[curve.task] = _rng(self.seed, "items", curve.task).integers(
                0, n, (self.n_boot, n)
            )
        idx = self._idx[curve.task]
        reps = np.empty((self.n_boot, len(cols)))
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            for b in range(self.n_boot):
                reps[b] = np.nanmean(mat[idx[b]], axis=0)
        return reps, "bootstrap-items"

    def _parametric_replicates(self, curve: Curve):
        if not curve.has_stderr:
            return None, None
        se = np.where(np.isfinite(curve.stderr), curve.stderr, 0.0)
        rng = _rng(self.seed, "parametric", curve.task, curve.metric)
        reps = curve.mean[None, :] + se[None, :] * rng.standard_normal((self.n_boot, se.size))
        return reps, "bootstrap-parametric"

    def boot_params(
        self, curve: Curve, res: FitResult, sigma, window: float | None = None, span=None
    ) -> list[np.ndarray | None] | None:
        """The law refitted to every replicate of ``curve`` (None where a refit failed)."""
        if not res.ok:
            return None
        reps, _ = self.replicates(curve)
        if reps is None:
            return None
        key = (curve.task, curve.metric, res.law.name, res.law.formula, window, span)
        if key not in self._boot:
            self._boot[key] = [
                refit(res.law, curve.norms, reps[b], sigma, res.params, window, span)
                for b in range(reps.shape[0])
            ]
        return self._boot[key]


def _fit_range(law: Law, curve: Curve, sigma, span: tuple[float, float]) -> FitResult:
    return fit_law(law, curve.norms, curve.mean, sigma, span=span)


def _fit_block(ctx: _Context, curve: Curve, res: FitResult, sigma, window=None, span=None) -> dict:
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
    best = min(ok, key=lambda k: ok[k].aic)
    best_bic = min(ok, key=lambda k: ok[k].bic)
    return table, best, best_bic


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


def _fit_alignment(ctx: _Context, curve: Curve, align_window: float | None):
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


def _fit_helpfulness(
    ctx: _Context, curve: Curve, *, chance: float, k: int | None, window: float
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
        ctx.warn(
            f"{curve.task}/{curve.metric}: only {n_in} norm(s) within |r| <= {window:g}; "
            f"the quadratic is fitted on the central third of the grid, |r| <= {w:g}"
        )
    quad = fit_law(quadratic_law(), curve.norms, curve.mean, sigma, window=w)
    fits["quadratic"] = _fit_block(ctx, curve, quad, sigma, window=w)
    fits["quadratic"]["window_requested"] = float(window)
    table, best, best_bic = _compare(results)
    out.update(comparison=table, best=best, best_bic=best_bic)
    i_peak = int(np.argmax(curve.mean))
    out["peak"] = {"norm": float(curve.norms[i_peak]), "value": float(curve.mean[i_peak])}
    out["chance_norm"] = _chance_norms(curve, chance, results, best)
    return out, results, sigma


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


def _checks(ctx: _Context, task: str, n_boot: int, n_draws: int) -> dict:
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
    a3 = diag.check_a3(items, _rng(ctx.seed, "a3", task), n_boot=n_boot)
    out["a3"] = a3
    helpful = run.curve(task, "helpfulness")
    if a3 is None or a3.get("sigma") is None or helpful is None:
        return out
    out["prediction"] = diag.predict_helpfulness(
        items, float(a3["sigma"]), helpful, _rng(ctx.seed, "predict", task), n_draws
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
) -> dict:
    """Fit the theory to the run in ``run_dir``, write ``run_dir/fits.json`` and return it.

    ``choices``: the number of options ``k`` of helpfulness tasks that ``config.json`` does not
    give (default: the items' option count, else 4 with a warning). ``window``: half-width of
    the local quadratic helpfulness fit. ``lam``: the exchange rate λ (helpfulness units per
    alignment unit) of the efficient regime and the recommendation. ``n_boot``: bootstrap
    replicates (0: none). ``seed``: seeds every random draw. ``align_window``: half-width
    of the local linear alignment fit (default: see the module notes). ``n_draws``: Monte
    Carlo draws of the helpfulness prediction. ``command``: the command line that asked
    for the fit, recorded in ``fits.json`` for the report.

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
    run_dir = Path(run_dir)
    try:
        run = read_run(run_dir)
    except RunFileError as err:
        raise TheoryError(str(err)) from None
    warnings: list[str] = list(run.warnings)
    ctx = _Context(run, int(n_boot), int(seed), warnings)

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
    }
    tasks: dict[str, dict] = {}
    align_fits: dict[str, tuple[dict, dict, Any]] = {}
    for t in align_tasks:
        align_fits[t] = _fit_alignment(ctx, run.curve(t, "alignment"), align_window)
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
            help_fits[t] = _fit_helpfulness(ctx, curve, chance=1.0 / k, k=k, window=window)
            entry["helpfulness"] = help_fits[t][0]
        else:
            ctx.warn(f"{t}: no `helpfulness` points; only `helpfulness_vocab` is fitted")
        vocab = run.curve(t, "helpfulness_vocab")
        entry["helpfulness_vocab"] = (
            None if vocab is None
            else _fit_helpfulness(ctx, vocab, chance=0.0, k=None, window=window)[0]
        )
        entry["checks"] = _checks(ctx, t, int(n_boot), int(n_draws))
        tasks[t] = entry
    if not help_tasks:
        ctx.warn("no helpfulness points: no efficient regime or recommendation")

    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "command": command, "settings": settings, "tasks": tasks,
        "efficient_regime": None, "pareto": [], "recommendation": None,
    }
    # the tradeoff is between the first alignment and the first helpfulness task of the run
    if align_tasks and help_tasks and help_tasks[0] in help_fits:
        a_task, h_task = align_tasks[0], help_tasks[0]
        out.update(_tradeoff(ctx, a_task, align_fits[a_task], h_task, help_fits[h_task], lam))
    out["warnings"] = warnings
    fits = FitsFile.model_validate(_clean(out))
    write_fits(run_dir, fits)
    return fits.model_dump(mode="json", by_alias=True)


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


def _tradeoff(ctx: _Context, a_task: str, align_fit, h_task: str, help_fit, lam: float) -> dict:
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
    h_name = _regime_model(h_results, h_blk.get("best"))
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
        out["recommendation"] = rec
    return out
