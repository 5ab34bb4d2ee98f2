"""Weighted least-squares fits of the laws, with R², AIC, BIC and 95% intervals.

Conventions
-----------
* Weights are ``1/stderr²`` when the points carry standard errors. A standard error of 0
  (every item agreed, e.g. a saturated behavior score) is raised to a quarter of the median
  positive standard error so that one point cannot get infinite weight.
* The weights are treated as *relative*: the noise scale is estimated from the residuals
  (``curve_fit(absolute_sigma=False)``). The likelihood behind AIC and BIC is Gaussian with
  variances ``s²/w_i`` and ``s²`` at its maximum, ``WSS/n``; it counts ``s`` as a parameter.
  Weights are normalised to geometric mean 1, so with equal weights AIC is the ordinary
  ``n·ln(2π·RSS/n) + n + 2(p + 1)``. AIC and BIC are comparable only between fits on the
  same points; ``fit`` compares only whole-grid fits.
* ``r2`` is the ordinary unweighted ``1 − RSS/TSS`` of the fitted curve (descriptive).
* Nonlinear fits start from a grid of starting values and keep the best; a fit that cannot
  be made (too few points, a flat curve, no convergence) returns an ``error`` instead.
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special, stats

from repe_tradeoff.theory.laws.forms import Law

CI_LEVEL = 0.95


@dataclass
class FitResult:
    law: Law
    n: int
    window: float | None = None
    span: tuple[float, float] | None = None
    params: np.ndarray | None = None
    cov: np.ndarray | None = None
    r2: float | None = None
    aic: float | None = None
    bic: float | None = None
    rmse: float | None = None
    at_bound: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.params is not None

    def param_dict(self) -> dict[str, float]:
        assert self.params is not None
        return {k: float(v) for k, v in zip(self.law.params, self.params)}

    def predict(self, r) -> np.ndarray:
        assert self.params is not None
        return self.law(np.asarray(r, dtype=float), *self.params)


def effective_sigma(stderr: np.ndarray | None) -> np.ndarray | None:
    """Standard errors usable as weights (see the module notes), or None for an unweighted fit."""
    if stderr is None:
        return None
    se = np.asarray(stderr, dtype=float).copy()
    positive = se[np.isfinite(se) & (se > 0)]
    if positive.size == 0:
        return None
    floor = 0.25 * float(np.median(positive))
    se[~np.isfinite(se)] = float(np.median(positive))
    return np.maximum(se, floor)


def _select(r, y, sigma, window, span=None):
    r = np.asarray(r, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(r) & np.isfinite(y)
    if window is not None:
        keep &= np.abs(r) <= window + 1e-9
    if span is not None:
        keep &= (r >= span[0] - 1e-9) & (r <= span[1] + 1e-9)
    s = None if sigma is None else np.asarray(sigma, dtype=float)[keep]
    return r[keep], y[keep], s


def _weights(sigma: np.ndarray | None, n: int) -> np.ndarray:
    if sigma is None:
        return np.ones(n)
    w = 1.0 / sigma**2
    return w / np.exp(np.mean(np.log(w)))


def information(y, fitted, w, n_params: int) -> tuple[float, float, float]:
    """``(aic, bic, wss)`` of a fit under the Gaussian likelihood described above.

    A residual variance below ``1e-12`` of the data's variance counts as a perfect fit, so
    that two exact fits differ only by their parameter penalty.
    """
    n = y.size
    wss = float(np.sum(w * (y - fitted) ** 2))
    floor = 1e-12 * max(float(np.sum(w * (y - np.average(y, weights=w)) ** 2)) / n, 1e-300)
    m2ll = n * np.log(2 * np.pi * max(wss / n, floor)) + n
    k = n_params + 1
    return float(m2ll + 2 * k), float(m2ll + k * np.log(n)), wss


def r_squared(y, fitted) -> float:
    tss = float(np.sum((y - np.mean(y)) ** 2))
    rss = float(np.sum((y - fitted) ** 2))
    return 1.0 - rss / tss if tss > 0 else float("nan")


def _inside(p0, law: Law) -> np.ndarray:
    p = np.asarray(p0, dtype=float).copy()
    lo = np.asarray(law.lower, dtype=float)
    hi = np.asarray(law.upper, dtype=float)
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    return np.clip(p, lo + 1e-9 * span + 1e-12, hi - 1e-9 * span - 1e-12)


def _solve_linear(law: Law, r, y, w):
    p = len(law.params)
    design = np.column_stack([law(r, *np.eye(p)[j]) for j in range(p)])
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    dof = r.size - p
    cov = None
    if dof > 0:
        s2 = float(np.sum(w * (y - design @ coef) ** 2)) / dof
        try:
            cov = s2 * np.linalg.inv(design.T @ (design * w[:, None]))
        except np.linalg.LinAlgError:
            cov = None
    return coef, cov


def _curve_fit(law: Law, r, y, sigma, p0):
    kw = {}
    if law.bounded:
        kw["bounds"] = (np.asarray(law.lower, float), np.asarray(law.upper, float))
        kw["max_nfev"] = 500
    else:
        kw["maxfev"] = 4000
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            popt, pcov = optimize.curve_fit(
                law.func, r, y, p0=_inside(p0, law), sigma=sigma, absolute_sigma=False, **kw
            )
    return popt, pcov


def fit_law(
    law: Law,
    r,
    y,
    sigma=None,
    *,
    window: float | None = None,
    span: tuple[float, float] | None = None,
    starts: list[tuple[float, ...]] | None = None,
) -> FitResult:
    """Fit ``law`` to ``(r, y)`` (on ``|r| ≤ window`` / ``span[0] ≤ r ≤ span[1]`` when given)."""
    r, y, sigma = _select(r, y, sigma, window, span)
    n, p = r.size, len(law.params)
    res = FitResult(law=law, n=n, window=window, span=span)
    if n < p + 1:
        res.error = (
            f"too few points: {n} norm(s) for {p} parameters (need at least {p + 1})"
            + (f" within |r| <= {window:g}" if window is not None else "")
        )
        return res
    if float(np.ptp(y)) == 0.0:
        res.error = "degenerate curve: the mean is the same at every norm"
        return res
    w = _weights(sigma, n)
    if law.linear:
        params, cov = _solve_linear(law, r, y, w)
    else:
        best = None
        tried = starts if starts is not None else law.starts(r, y)
        failures: list[str] = []
        for p0 in tried:
            try:
                if law.bounded:
                    popt, pcov = _curve_fit_mapped(law, r, y, sigma, p0), None
                else:
                    popt, pcov = _curve_fit(law, r, y, sigma, p0)
            except (RuntimeError, ValueError, optimize.OptimizeWarning) as exc:
                failures.append(str(exc).split("\n")[0])
                continue
            fitted = law(r, *popt)
            if not np.all(np.isfinite(fitted)) or not np.all(np.isfinite(popt)):
                continue
            wss = float(np.sum(w * (y - fitted) ** 2))
            if best is None or wss < best[0] - 1e-15:
                best = (wss, popt, pcov)
        if law.bounded:
            # polish the best start (or, if none converged, each start) with the bounded
            # solver, which also gives the covariance in the law's own parameters
            for p0 in [best[1]] if best is not None else tried:
                try:
                    popt, pcov = _curve_fit(law, r, y, sigma, p0)
                except (RuntimeError, ValueError, optimize.OptimizeWarning) as exc:
                    failures.append(str(exc).split("\n")[0])
                    continue
                fitted = law(r, *popt)
                if not np.all(np.isfinite(fitted)) or not np.all(np.isfinite(popt)):
                    continue
                wss = float(np.sum(w * (y - fitted) ** 2))
                if best is None or wss <= best[0] * (1 + 1e-9) + 1e-300:
                    best = (wss, popt, pcov)
        if best is None:
            why = failures[0] if failures else "non-finite curve"
            res.error = f"did not converge from {len(tried)} starting point(s): {why}"
            return res
        _, params, cov = best
        if cov is not None and not np.all(np.isfinite(cov)):
            cov = None
    fitted = law(r, *params)
    if not np.all(np.isfinite(fitted)):
        res.error = "degenerate fit: the fitted curve is not finite"
        return res
    res.params = np.asarray(params, dtype=float)
    res.cov = None if cov is None else np.asarray(cov, dtype=float)
    res.aic, res.bic, _ = information(y, fitted, w, p)
    res.r2 = r_squared(y, fitted)
    res.rmse = float(np.sqrt(np.mean((y - fitted) ** 2)))
    lo, hi = np.asarray(law.lower, float), np.asarray(law.upper, float)
    tol = 1e-6 * np.maximum(1.0, np.abs(res.params))
    res.at_bound = [
        name
        for name, v, a, b in zip(law.params, res.params, lo, hi)
        if (np.isfinite(a) and v - a <= tol[law.params.index(name)])
        or (np.isfinite(b) and b - v <= tol[law.params.index(name)])
    ]
    return res


def _to_theta(p: np.ndarray, law: Law) -> np.ndarray:
    th = np.asarray(p, dtype=float).copy()
    for j, (lo, hi) in enumerate(zip(law.lower, law.upper)):
        if np.isfinite(lo) and np.isfinite(hi):
            u = (th[j] - lo) / (hi - lo)
            th[j] = np.log(u) - np.log1p(-u)
        elif np.isfinite(lo):
            th[j] = np.log(th[j] - lo)
        elif np.isfinite(hi):
            th[j] = np.log(hi - th[j])
    return th


def _from_theta(th: np.ndarray, law: Law) -> np.ndarray:
    p = np.asarray(th, dtype=float).copy()
    for j, (lo, hi) in enumerate(zip(law.lower, law.upper)):
        if np.isfinite(lo) and np.isfinite(hi):
            p[j] = lo + (hi - lo) * special.expit(th[j])
        elif np.isfinite(lo):
            p[j] = lo + np.exp(th[j])
        elif np.isfinite(hi):
            p[j] = hi - np.exp(th[j])
    return p


def _curve_fit_mapped(law: Law, r, y, sigma, p0) -> np.ndarray:
    """Levenberg-Marquardt on the parameters mapped to the real line (see ``refit``)."""

    def g(x, *th):
        return law.func(x, *_from_theta(np.asarray(th), law))

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            th, _ = optimize.curve_fit(
                g, r, y, p0=_to_theta(_inside(p0, law), law), sigma=sigma, maxfev=4000
            )
    return _from_theta(th, law)


def refit(law: Law, r, y, sigma, start: np.ndarray, window: float | None = None, span=None):
    """One quick refit (for a bootstrap replicate) from ``start``; None when it fails.

    Bounded parameters are mapped to the real line (log or logit) so that the fast
    unbounded Levenberg-Marquardt solver can be used; the estimate is mapped back.
    """
    r, y, sigma = _select(r, y, sigma, window, span)
    n, p = r.size, len(law.params)
    if n < p + 1 or float(np.ptp(y)) == 0.0:
        return None
    if law.linear:
        params, _ = _solve_linear(law, r, y, _weights(sigma, n))
        return params
    if not law.bounded:
        res = fit_law(law, r, y, sigma, starts=[tuple(start)])
        return res.params if res.ok else None

    try:
        params = _curve_fit_mapped(law, r, y, sigma, start)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        params = None
    if params is None or not np.all(np.isfinite(params)) or not np.all(
        np.isfinite(law(r, *params))
    ):
        res = fit_law(law, r, y, sigma, starts=[tuple(start)])
        return res.params if res.ok else None
    return params


def covariance_ci(res: FitResult) -> dict[str, list[float] | None]:
    """Wald intervals ``p ± t·se`` from the fit's covariance, clipped to the law's bounds."""
    out: dict[str, list[float] | None] = {}
    if res.params is None:
        return out
    dof = res.n - len(res.law.params)
    if res.cov is None or dof <= 0:
        return {k: None for k in res.law.params}
    t = float(stats.t.ppf(0.5 + CI_LEVEL / 2, dof))
    for j, name in enumerate(res.law.params):
        var = res.cov[j, j]
        if not np.isfinite(var) or var < 0:
            out[name] = None
            continue
        half = t * float(np.sqrt(var))
        lo = max(res.params[j] - half, res.law.lower[j])
        hi = min(res.params[j] + half, res.law.upper[j])
        out[name] = [float(lo), float(hi)]
    return out


def percentile_ci(samples, level: float = CI_LEVEL) -> list[float] | None:
    """The percentile interval of bootstrap ``samples`` (non-finite ones dropped)."""
    x = np.asarray([s for s in samples if s is not None], dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    q = 100 * (1 - level) / 2
    return [float(np.percentile(x, q)), float(np.percentile(x, 100 - q))]


def block(res: FitResult, *, ci: dict | None = None, ci_method: str | None = None,
          n_boot: int | None = None) -> dict:
    """The ``fits.json`` block of one fit."""
    out: dict = {"model": res.law.name, "formula": res.law.formula}
    if not res.ok:
        out["error"] = res.error
        out["n_points"] = res.n
        if res.window is not None:
            out["window"] = res.window
        return out
    out["params"] = res.param_dict()
    out["ci"] = ci if ci is not None else covariance_ci(res)
    out["ci_method"] = ci_method or "covariance"
    if n_boot is not None:
        out["n_boot"] = n_boot
    out.update(r2=res.r2, aic=res.aic, bic=res.bic, rmse=res.rmse, n_points=res.n)
    if res.window is not None:
        out["window"] = res.window
    if res.at_bound:
        out["at_bound"] = res.at_bound
    return out
