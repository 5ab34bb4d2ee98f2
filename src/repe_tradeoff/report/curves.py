"""Evaluate fitted laws from their parameters, and the A3 projections from item scores.

The law functions belong to :mod:`repe_tradeoff.theory.laws`; this module calls them and
falls back to the formulas below only when the theory package cannot be imported (so a
report still draws where only the report package is available).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._io import _finite


def chance_of(block: Any, *, k: int | None = None, metric: str | None = None) -> float:
    """The helpfulness floor a fit block was fitted with: its ``chance``, else 1/k or 0."""
    if isinstance(block, dict):
        c = _finite(block.get("chance"))
        if c is not None:
            return c
        metric = block.get("metric", metric)
    if metric == "helpfulness_vocab" or not k:
        return 0.0
    return 1.0 / k


def _fallback(form: str, p: Mapping[str, float], r: np.ndarray, chance: float) -> np.ndarray:
    if form == "tanh":
        return np.tanh(p["a"] * r + p["b"])
    if form == "tanh_scaled":
        return p["A"] * np.tanh(p["a"] * r + p["b"])
    if form in ("linear", "linear_full"):
        return p["slope"] * r + p["intercept"]
    if form == "quadratic":
        return p["c0"] + p["c1"] * r + p["c2"] * r**2
    if form == "corollary":
        return chance + (1 - chance) / (1 + p["a"] + p["a"] * (p["b"] ** 2 / 2) * r**2)
    if form == "corollary_paper":
        return 0.25 + 0.5 / (1 + p["a"] + p["a"] * (p["b"] ** 2 / 2) * r**2)
    if form == "gaussian":
        return chance + p["A"] * np.exp(-(r**2) / (2 * p["s"] ** 2))
    raise KeyError(form)


def evaluate(form: str, block: Any, r: np.ndarray, *, k: int | None = None,
             metric: str | None = None) -> np.ndarray | None:
    """The fitted curve of ``block`` (a fits.json fit block) at norms ``r``, or None."""
    if not isinstance(block, dict) or not isinstance(block.get("params"), dict):
        return None
    params = block["params"]
    r = np.asarray(r, dtype=float)
    chance = chance_of(block, k=k, metric=metric)
    out = None
    try:
        from repe_tradeoff.theory.laws import evaluate as theory_evaluate
    except ImportError:  # the report also works where the theory package is unavailable
        theory_evaluate = None
    try:
        with np.errstate(all="ignore"):
            if theory_evaluate is not None:
                out = theory_evaluate(form, params, r, chance=chance)
            else:
                out = _fallback(form, params, r, chance)
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return None  # an unknown form or parameters that do not fit it: no curve
    out = np.asarray(out, dtype=float)
    if out.shape != r.shape or not np.isfinite(out).any():
        return None
    return out


def a3_projections(items: Any) -> dict[float, np.ndarray]:
    """X_i(r) = (s_i(r) − s_c(r)) − (s_i(0) − s_c(0)) over wrong options and items, per norm.

    ``items`` is the theory module's ``TaskItems`` of one helpfulness task; the projections
    are computed by :func:`repe_tradeoff.theory.diagnostics.score_shifts` (the same numbers
    the A3 check in fits.json was made from). Empty when the items carry no option scores
    or the grid has no r = 0.
    """
    from repe_tradeoff.theory.diagnostics import score_shifts

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
