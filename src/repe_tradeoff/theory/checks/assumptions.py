r"""Checks of the paper's assumptions A1 and A3, and the helpfulness curve they predict.

A1 — the logit shift ``‖U·δ_r(q)‖`` grows linearly in ``r``
    Read from the ``logit_shift`` metric. We fit its mean against ``|r|`` through the origin
    and with an intercept, and look for saturation: the local slopes between consecutive
    ``|r|`` values (``±r`` averaged) are compared with the first one; the curve saturates at
    the first ``|r|`` where the local slope falls below half the initial slope.
    Status: ``pass`` when the through-origin R² over the whole grid is ≥ 0.95 and nothing
    saturates; ``warn`` when the through-origin R² up to the saturation point (or over the
    grid) is ≥ 0.80; ``fail`` otherwise, or when the shift does not grow at all.

A3 — ``X_i = (s_i(r) − s_c(r)) − (s_i(0) − s_c(0))`` is ``N(0, σ²r²)``
    Read from the items' option ``scores`` (the grid must contain ``r = 0``). For each norm
    we report the mean, standard deviation, skewness, excess kurtosis, D'Agostino's
    normality test (on at most 5000 values, sub-sampled with the seed) and the QQ
    correlation (sorted values against normal quantiles; 1 for exact normality). ``σ`` is
    the through-origin fit of ``std ≈ σ·|r|`` on the half of the non-zero norms with the
    smallest ``|r|``; its interval is a bootstrap over items. With thousands of values a
    normality test rejects any real distribution, so the status uses effect sizes, as
    medians over that small-``|r|`` half: ``pass`` when the QQ correlation is ≥ 0.98,
    ``|mean|/std`` ≤ 0.25 and the ``σ·|r|`` fit has R² ≥ 0.9; ``warn`` when the QQ
    correlation is ≥ 0.95 and ``|mean|/std`` ≤ 0.5; ``fail`` otherwise.

Prediction without fitting
    From each question's unsteered score gaps ``d_qi = s_i(0) − s_c(0)`` and the measured
    ``σ``:

    * closed form (the paper's corollary, exact when one Gaussian ``X`` is shared by all wrong
      options, since ``E[e^X] = exp(σ²r²/2)``):
      ``P_q(r) = 1/(1 + a_q·exp(σ²r²/2))`` with ``a_q = Σ_{i≠c} exp(d_qi)``; it decays to 0;
    * Monte Carlo: every option's score gets an independent perturbation ``ε_j ~ N(0,
      σ²r²/2)``, so ``X_i = ε_i − ε_c`` has variance ``σ²r²`` (correlation 0.5 between wrong
      options), and ``P_q(r) = E[softmax(d_q + ε)_c]``, which decays to ``1/k``.

    Both are averaged over questions and compared with the measured ``helpfulness`` curve.
    Status (of the Monte Carlo prediction): ``pass`` when its RMSE against the measured
    curve is ≤ 0.05, ``warn`` when ≤ 0.10, ``fail`` otherwise.
"""

from __future__ import annotations

import warnings as _warnings

import numpy as np
from scipy import special, stats

from repe_tradeoff.runs import Curve, TaskItems
from repe_tradeoff.theory.laws.fitting import percentile_ci

A1_PASS_R2 = 0.95
A1_WARN_R2 = 0.80
A3_PASS_QQ = 0.98
A3_WARN_QQ = 0.95
A3_PASS_MEAN = 0.25
A3_WARN_MEAN = 0.5
A3_PASS_FIT_R2 = 0.9
PREDICTION_PASS_RMSE = 0.05
PREDICTION_WARN_RMSE = 0.10
NORMALITY_CAP = 5000


def _r2(y, fitted) -> float | None:
    tss = float(np.sum((y - np.mean(y)) ** 2))
    if tss <= 0:
        return None
    return 1.0 - float(np.sum((y - fitted) ** 2)) / tss


def check_a1(curve: Curve) -> dict:
    """Assumption A1 from the ``logit_shift`` curve (see the module notes)."""
    absr = np.round(np.abs(curve.norms), 9)
    xs = np.unique(absr)
    ys = np.array([float(np.mean(curve.mean[absr == x])) for x in xs])
    out: dict = {"n_norms": int(xs.size)}
    if xs.size < 3 or np.all(xs == 0):
        out.update(status=None, error="too few norms to check A1 (need 3 distinct |r|)")
        return out
    slope = float(np.sum(xs * ys) / np.sum(xs**2))
    s_i, c_i = np.polyfit(xs, ys, 1)
    r2_origin = _r2(ys, slope * xs)
    r2_intercept = _r2(ys, s_i * xs + c_i)
    local = np.diff(ys) / np.diff(xs)
    initial = float(local[0])
    saturates_at = None
    if initial > 0:
        below = np.flatnonzero(local < 0.5 * initial)
        if below.size:
            saturates_at = float(xs[below[0]])
    if initial <= 0:
        status = "fail"
    else:
        upto = xs <= (saturates_at if saturates_at is not None else np.inf)
        r2_upto = None
        if np.count_nonzero(upto & (xs > 0)) >= 2:
            s_u = float(np.sum(xs[upto] * ys[upto]) / np.sum(xs[upto] ** 2))
            r2_upto = _r2(ys[upto], s_u * xs[upto])
        if saturates_at is None and r2_origin is not None and r2_origin >= A1_PASS_R2:
            status = "pass"
        elif (r2_upto is not None and r2_upto >= A1_WARN_R2) or (
            r2_origin is not None and r2_origin >= A1_WARN_R2
        ):
            status = "warn"
        else:
            status = "fail"
    out.update(
        slope=slope,
        r2=r2_origin,
        slope_with_intercept=float(s_i),
        intercept=float(c_i),
        r2_with_intercept=r2_intercept,
        initial_slope=initial,
        saturates_at=saturates_at,
        shift_at_zero=float(ys[0]) if xs[0] == 0 else None,
        status=status,
    )
    return out


def score_shifts(items: TaskItems) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``X[item, norm, option]`` for the wrong options, the norms, and the items' ``r = 0`` gaps.

    Returns ``(X, norms, d0)`` where ``d0[item, option]`` is ``s_i(0) − s_c(0)`` for every
    option (0 at the answer, NaN padding for items with fewer options), or None when the
    items carry no scores or the grid has no ``r = 0``.
    """
    if items.scores is None:
        return None
    j0 = items.norm_index(0.0)
    if j0 is None:
        return None
    n_items, n_norms = len(items.item_ids), items.norms.size
    sizes = [s.size for s in items.scores[j0] if s is not None]
    if not sizes:
        return None
    K = max(sizes)
    X = np.full((n_items, n_norms, K - 1), np.nan)
    d0 = np.full((n_items, K), np.nan)
    for i in range(n_items):
        s0, c = items.scores[j0][i], int(items.answers[i])
        if s0 is None or not 0 <= c < s0.size:
            continue
        g0 = s0 - s0[c]
        d0[i, : s0.size] = g0
        for j in range(n_norms):
            s = items.scores[j][i]
            if s is None or s.size != s0.size:
                continue
            x = np.delete((s - s[c]) - g0, c)
            X[i, j, : x.size] = x
    return X, items.norms, d0


def _qq_corr(x: np.ndarray) -> float | None:
    if x.size < 3 or np.std(x) == 0:
        return None
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        (_, _), (_, _, r) = stats.probplot(x, dist="norm")
    return float(r)


def _sigma_fit(absr: np.ndarray, std: np.ndarray) -> float:
    ok = np.isfinite(std)
    return float(np.sum(absr[ok] * std[ok]) / np.sum(absr[ok] ** 2)) if ok.any() else np.nan


def check_a3(items: TaskItems, rng: np.random.Generator, n_boot: int = 200) -> dict | None:
    """Assumption A3 from the items' scores; None when they cannot tell (see the module notes)."""
    shifts = score_shifts(items)
    if shifts is None:
        return None
    X, norms, _ = shifts
    nonzero = np.flatnonzero(np.abs(norms) > 1e-12)
    if nonzero.size == 0:
        return None
    by_norm = []
    stds = np.full(norms.size, np.nan)
    for j in nonzero:
        x = X[:, j, :].ravel()
        x = x[np.isfinite(x)]
        row: dict = {"norm": float(norms[j]), "n": int(x.size)}
        if x.size < 3:
            by_norm.append(row)
            continue
        sub = x if x.size <= NORMALITY_CAP else rng.choice(x, NORMALITY_CAP, replace=False)
        std = float(np.std(x, ddof=1))
        stds[j] = std
        row.update(mean=float(np.mean(x)), std=std)
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            row["skew"] = float(stats.skew(x)) if std > 0 else None
            row["excess_kurtosis"] = float(stats.kurtosis(x, fisher=True)) if std > 0 else None
            if sub.size >= 20 and std > 0:
                stat, p = stats.normaltest(sub)
                row["normality_stat"], row["normality_p"] = float(stat), float(p)
            else:
                row["normality_stat"] = row["normality_p"] = None
        row["normality_test"] = "dagostino"
        row["qq_corr"] = _qq_corr(sub)
        by_norm.append(row)
    absr = np.abs(norms)
    usable = [j for j in nonzero if np.isfinite(stds[j])]
    if not usable:
        return {"sigma": None, "by_norm": by_norm, "status": None,
                "error": "too few option scores per norm"}
    cut = float(np.median(absr[usable]))
    small = np.array([j for j in usable if absr[j] <= cut + 1e-12])
    sigma = _sigma_fit(absr[small], stds[small])
    sigma_all = _sigma_fit(absr[usable], stds[usable])
    r2_small = _r2(stds[small], sigma * absr[small]) if small.size >= 2 else None
    boot = []
    n_items = X.shape[0]
    Xs = X[:, small, :]
    for _ in range(n_boot):
        idx = rng.integers(0, n_items, n_items)
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            s_b = np.nanstd(Xs[idx], axis=(0, 2), ddof=1)
        boot.append(_sigma_fit(absr[small], s_b))
    rows = {round(r["norm"], 9): r for r in by_norm}
    qq = [rows[round(float(norms[j]), 9)].get("qq_corr") for j in small]
    qq = [q for q in qq if q is not None]
    ratio = [
        abs(rows[round(float(norms[j]), 9)]["mean"]) / stds[j] for j in small if stds[j] > 0
    ]
    qq_med = float(np.median(qq)) if qq else None
    ratio_med = float(np.median(ratio)) if ratio else None
    status = None
    if qq_med is not None and ratio_med is not None:
        if (
            qq_med >= A3_PASS_QQ
            and ratio_med <= A3_PASS_MEAN
            and (r2_small is None or r2_small >= A3_PASS_FIT_R2)
        ):
            status = "pass"
        elif qq_med >= A3_WARN_QQ and ratio_med <= A3_WARN_MEAN:
            status = "warn"
        else:
            status = "fail"
    return {
        "sigma": sigma,
        "sigma_ci": percentile_ci(boot),
        "sigma_ci_method": "bootstrap-items",
        "sigma_fit_norms": [float(norms[j]) for j in small],
        "sigma_fit_r2": r2_small,
        "sigma_all_norms": sigma_all,
        "qq_corr_median": qq_med,
        "mean_over_std_median": ratio_med,
        "by_norm": by_norm,
        "status": status,
    }


def a3_helpfulness(
    items: TaskItems,
    sigma: float,
    measured: Curve,
    rng: np.random.Generator,
    n_draws: int = 2000,
) -> dict | None:
    """Mean helpfulness predicted at the norms of the ``measured`` curve from the ``r = 0``
    scores and ``σ`` (see the module notes), and its error against that curve."""
    shifts = score_shifts(items)
    if shifts is None or not np.isfinite(sigma):
        return None
    _, _, d0 = shifts
    valid = np.isfinite(d0).any(axis=1)
    d0 = d0[valid]
    answers = items.answers[valid]
    if d0.shape[0] == 0:
        return None
    norms = measured.norms
    sizes = np.sum(np.isfinite(d0), axis=1)
    closed = np.zeros(norms.size)
    mc = np.zeros(norms.size)
    total = d0.shape[0]
    for k in np.unique(sizes):
        grp = np.flatnonzero(sizes == k)
        d = d0[grp, :k]
        c = answers[grp]
        # log a_q = log sum_{i != c} exp(d_qi); d_qc = 0
        mask = np.ones_like(d, dtype=bool)
        mask[np.arange(grp.size), c] = False
        log_a = special.logsumexp(np.where(mask, d, -np.inf), axis=1)
        z = rng.standard_normal((n_draws, int(k)))
        chunk = max(1, int(4_000_000 // (n_draws * k)))
        for j, r in enumerate(norms):
            closed[j] += float(np.sum(special.expit(-(log_a + sigma**2 * r**2 / 2.0))))
            eps = z * (sigma * abs(r) / np.sqrt(2.0))
            acc = 0.0
            for s in range(0, grp.size, chunk):
                dd = d[s : s + chunk]
                cc = c[s : s + chunk]
                logits = dd[None, :, :] + eps[:, None, :]
                logits -= logits.max(axis=2, keepdims=True)
                np.exp(logits, out=logits)
                lc = logits[:, np.arange(cc.size), cc]
                acc += float(np.sum(np.mean(lc / logits.sum(axis=2), axis=0)))
            mc[j] += acc
    err, err_cf = compare(mc / total, measured.mean), compare(closed / total, measured.mean)
    rmse = err["rmse"]
    status = (None if rmse is None else "pass" if rmse <= PREDICTION_PASS_RMSE
              else "warn" if rmse <= PREDICTION_WARN_RMSE else "fail")
    return {
        "norms": norms.tolist(),
        "predicted": (mc / total).tolist(),
        "predicted_closed_form": (closed / total).tolist(),
        "measured": measured.mean.tolist(),
        "sigma": float(sigma),
        "n_items": int(total),
        "n_draws": int(n_draws),
        **err,
        "rmse_closed_form": err_cf["rmse"],
        "max_abs_error_closed_form": err_cf["max_abs_error"],
        "status": status,
    }


def compare(predicted, measured) -> dict:
    """``rmse`` and ``max_abs_error`` of a predicted curve against the measured one."""
    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    ok = np.isfinite(p) & np.isfinite(m)
    if not ok.any():
        return {"rmse": None, "max_abs_error": None}
    e = p[ok] - m[ok]
    return {"rmse": float(np.sqrt(np.mean(e**2))), "max_abs_error": float(np.max(np.abs(e)))}
