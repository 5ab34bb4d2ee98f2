r"""The efficient regime, the Pareto frontier of the grid, and the recommended norm.

Efficient regime
    Let ``d = ±1`` be the direction in which the fitted alignment curve increases and
    ``t = d·r ≥ 0``. Steering by ``t`` is net-positive while the marginal alignment gain
    exceeds the exchange-rate-weighted marginal helpfulness loss,
    ``dA/dt > λ·(−dH/dt)``, i.e. while ``A + λ·H`` still increases. The regime ends at the
    smallest ``t > 0`` where ``dA/dt + λ·dH/dt`` reaches 0 (for a helpfulness curve that
    decreases there, this is ``λ·|dH/dr| ≥ dA/dr``). Derivatives are taken from the fitted
    curves; the end is searched on the grid's range in that direction (null when the
    regime does not end inside the grid). ``λ`` is in helpfulness units per alignment unit:
    alignment spans [-1, 1], helpfulness [0, 1].

Pareto frontier
    The grid norms (measured by both curves) whose (alignment, helpfulness) pair is not
    dominated by another norm's: no other norm has both at least as high and one higher.

Recommendation
    Among the measured grid norms ``r`` with ``0 < d·r ≤ max_norm`` (every norm in the
    aligned direction when the regime does not end inside the grid) the one that maximises
    the measured gain ``[A(r) − A(0)] + λ·[H(r) − H(0)]``. Measured values, not fitted ones,
    because the recommendation is a norm to run; the fitted regime bounds the search. When
    no norm gains, the recommendation is ``r = 0`` (no steering).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import optimize

from repe_tradeoff.theory.laws.fitting import percentile_ci

Curve1D = Callable[[np.ndarray], np.ndarray]


def regime_end(
    alignment: Curve1D,
    helpfulness: Curve1D,
    *,
    lam: float,
    direction: int,
    t_max: float,
    n_grid: int = 4001,
) -> float | None:
    """The end ``t = |r|`` of the efficient regime (see the module notes), or None."""
    if not (t_max > 0):
        return None
    eps = 1e-5 * t_max

    def marginal(t):
        t = np.asarray(t, dtype=float)
        hi = direction * (t + eps)
        lo = direction * (t - eps)
        da = (alignment(hi) - alignment(lo)) / (2 * eps)
        dh = (helpfulness(hi) - helpfulness(lo)) / (2 * eps)
        return da + lam * dh

    t = np.linspace(eps, t_max, n_grid)
    with np.errstate(all="ignore"):
        f = marginal(t)
    if not np.all(np.isfinite(f)):
        return None
    if f[0] <= 0:
        return 0.0
    neg = np.flatnonzero(f <= 0)
    if neg.size == 0:
        return None
    i = int(neg[0])
    if f[i] == 0:
        return float(t[i])
    try:
        return float(optimize.brentq(lambda x: float(marginal(x)), t[i - 1], t[i], xtol=1e-10))
    except ValueError:
        return float(t[i])


def common_grid(norms_a: np.ndarray, norms_h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Norms measured by both curves and their indices in each."""
    ia, ih = [], []
    for i, r in enumerate(norms_a):
        hit = np.flatnonzero(np.isclose(norms_h, r, atol=1e-9, rtol=0))
        if hit.size:
            ia.append(i)
            ih.append(int(hit[0]))
    ia_arr, ih_arr = np.array(ia, dtype=int), np.array(ih, dtype=int)
    return norms_a[ia_arr], ia_arr, ih_arr


def pareto(norms: np.ndarray, align: np.ndarray, helpful: np.ndarray) -> list[dict]:
    """The non-dominated ``(alignment, helpfulness)`` points of the grid, by norm."""
    keep = []
    for i in range(norms.size):
        dominated = np.any(
            (align >= align[i]) & (helpful >= helpful[i]) & ((align > align[i]) | (helpful > helpful[i]))
        )
        if not dominated:
            keep.append(i)
    keep.sort(key=lambda i: norms[i])
    return [
        {"norm": float(norms[i]), "alignment": float(align[i]), "helpfulness": float(helpful[i])}
        for i in keep
    ]


def _fmt_ci(ci) -> str:
    if ci is None:
        return ""
    return f" [{ci[0]:.3g}, {ci[1]:.3g}]"


def lambda_words(lam: float) -> str:
    """``λ = 1 (one unit of alignment, on its -1..1 scale, is worth 1 of P(correct))``."""
    return (f"λ = {lam:.3g} (one unit of alignment, on its -1..1 scale, is worth {lam:.3g} "
            "of P(correct), which runs 0..1)")


def recommend(
    norms: np.ndarray,
    align: np.ndarray,
    helpful: np.ndarray,
    *,
    direction: int,
    max_norm: float | None,
    lam: float,
    align_reps: np.ndarray | None = None,
    help_reps: np.ndarray | None = None,
    ci_method: str | None = None,
) -> dict:
    """The recommended grid norm (see the module notes) with gains relative to ``r = 0``.

    ``norms``, ``align`` and ``helpful`` are the measured values on the common grid;
    ``align_reps``/``help_reps`` are ``(n_boot, n_norms)`` replicates of them for intervals.
    """
    zero = np.flatnonzero(np.isclose(norms, 0.0, atol=1e-9, rtol=0))
    if zero.size == 0:
        return {"norm": None, "text": "no recommendation: the grid has no r = 0 to compare with"}
    z = int(zero[0])
    t = direction * norms
    cand = np.flatnonzero((t > 1e-12) & (t <= (np.inf if max_norm is None else max_norm + 1e-9)))
    base = {"lambda": lam, "direction": direction, "ci_method": ci_method}
    if cand.size == 0:
        why = (
            "the efficient regime is empty: from the first step, the helpfulness lost "
            "outweighs the alignment gained"
            if max_norm == 0
            else f"no grid norm lies inside the efficient regime (|r| <= {max_norm:.3g}); "
            "refine the grid near 0"
        )
        return {
            **base,
            "norm": 0.0,
            "alignment_gain": 0.0,
            "helpfulness_change": 0.0,
            "text": f"r = 0: {why}",
        }
    gain_a = align[cand] - align[z]
    gain_h = helpful[cand] - helpful[z]
    score = gain_a + lam * gain_h
    best = int(np.argmax(score))
    if score[best] <= 0:
        return {
            **base,
            "norm": 0.0,
            "alignment_gain": 0.0,
            "helpfulness_change": 0.0,
            "text": "r = 0: no grid norm in the efficient regime gains alignment + lambda * helpfulness",
        }
    j = int(cand[best])
    ga, gh = float(gain_a[best]), float(gain_h[best])
    ci_a = ci_h = None
    if align_reps is not None:
        ci_a = percentile_ci(align_reps[:, j] - align_reps[:, z])
    if help_reps is not None:
        ci_h = percentile_ci(help_reps[:, j] - help_reps[:, z])
    text = (
        f"r = {norms[j]:.3g}: alignment {ga:+.3g}{_fmt_ci(ci_a)}, "
        f"helpfulness {gh:+.3g}{_fmt_ci(ci_h)}, the most alignment + λ·helpfulness inside "
        f"the efficient regime at {lambda_words(lam)}"
    )
    return {
        **base,
        "norm": float(norms[j]),
        "alignment_gain": ga,
        "alignment_gain_ci": ci_a,
        "helpfulness_change": gh,
        "helpfulness_change_ci": ci_h,
        "objective_gain": float(score[best]),
        "text": text,
    }
