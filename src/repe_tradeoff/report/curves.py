"""Fitted laws evaluated from their fits.json parameters, and the A3 projections."""

from __future__ import annotations

import numpy as np

from repe_tradeoff.runs import TaskItems
from repe_tradeoff.runs.schema import FitBlock
from repe_tradeoff.theory.checks.assumptions import score_shifts
from repe_tradeoff.theory.laws.forms import evaluate as evaluate_law


def evaluate(fit: FitBlock | None, r: np.ndarray, *, chance: float = 0.0) -> np.ndarray | None:
    """The fitted curve at norms ``r`` (None for a failed fit or one that is nowhere finite)."""
    if fit is None or not fit.ok:
        return None
    with np.errstate(all="ignore"):
        out = np.asarray(evaluate_law(fit.model, fit.params, r, chance=chance), dtype=float)
    return out if np.isfinite(out).any() else None


def a3_projections(items: TaskItems | None) -> dict[float, np.ndarray]:
    """X_i(r) = (s_i(r) − s_c(r)) − (s_i(0) − s_c(0)) over wrong options and items, per norm.

    The same numbers the A3 check in fits.json was made from. Empty when the items carry
    no option scores or the grid has no r = 0.
    """
    shifts = score_shifts(items) if items is not None else None
    if shifts is None:
        return {}
    X, norms, _ = shifts
    out: dict[float, np.ndarray] = {}
    for j, r in enumerate(np.asarray(norms, dtype=float)):
        if abs(r) < 1e-12:
            continue
        x = np.asarray(X[:, j, :], dtype=float).ravel()
        x = x[np.isfinite(x)]
        if x.size:
            out[float(r)] = x
    return out
