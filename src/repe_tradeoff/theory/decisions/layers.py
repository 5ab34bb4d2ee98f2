"""The numbers of one atlas entry, from its probe scores (items at 0 and ±h) — numpy only.

The response math is :mod:`.response` / :mod:`.response_summary`'s: the alignment slope at 0
and helpfulness' r² coefficient split into spread and drift (:func:`~.response_summary.decompose`),
and the predicted per-item curves (:func:`~.response.item_curves`). What the atlas adds:

* ``norm_at_budget``: the smallest ``r > 0`` (towards more alignment) where the predicted mean
  P(correct) has fallen by ``budget`` below its value at 0 — searched out to
  ``BUDGET_SEARCH_STEPS`` probe steps, beyond which it is ``None`` (the probe says nothing there);
* ``alignment_gain_at_budget``: predicted alignment there minus at 0;
* the separation of held-out pairs by a layer's direction: accuracy of the projection as a
  classifier (threshold: midway between the training pairs' class means) and the AUC;
* the correlation of entries' gains with their separation (Pearson, Fisher-z interval).

Every interval is a 95 % percentile bootstrap over items (over held-out pairs for separation),
helpfulness and alignment items resampled independently (they are different items).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.response.prediction import (
    AlignmentResponse,
    HelpfulnessResponse,
    Probe,
    alignment_response,
    boot_indices,
    helpfulness_response,
    item_curves,
)
from repe_tradeoff.theory.response.summary import decompose

#: How far (in probe steps h) the budget's norm is searched for.
BUDGET_SEARCH_STEPS = 64
_SEARCH_POINTS = 1281

Interval = tuple[float | None, float | None, float | None]  # value, low, high


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def first_crossing(curves: np.ndarray, norms: np.ndarray, budget: float) -> np.ndarray:
    """Per row of mean curves ``(rows, len(norms))`` over ``norms`` (from 0 up), the first norm
    where the curve is ``budget`` below its value at 0, linearly interpolated; NaN if none."""
    drop = curves[:, :1] - curves
    over = drop >= budget
    hit = over.any(axis=1)
    i = np.where(hit, over.argmax(axis=1), 0)
    out = np.full(len(curves), np.nan)
    rows = np.flatnonzero(hit & (i > 0))
    lo, hi = drop[rows, i[rows] - 1], drop[rows, i[rows]]
    frac = (budget - lo) / np.where(hi > lo, hi - lo, 1.0)
    out[rows] = norms[i[rows] - 1] + frac * (norms[i[rows]] - norms[i[rows] - 1])
    out[np.flatnonzero(hit & (i == 0))] = norms[0]
    return out


def _at(curves: np.ndarray, norms: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Each row's curve interpolated at ``where[row]`` (NaN stays NaN)."""
    out = np.full(len(curves), np.nan)
    for k in np.flatnonzero(np.isfinite(where)):
        out[k] = np.interp(where[k], norms, curves[k])
    return out


def _interval(value: float, boots: np.ndarray, unbounded_high: bool = False) -> Interval:
    """Value and percentile interval; boots that found nothing (NaN) count as beyond the high end
    when ``unbounded_high`` (the interval then has no upper bound if they are 2.5 % or more)."""
    finite = boots[np.isfinite(boots)]
    if not finite.size:
        return _finite(value), None, None
    if unbounded_high:
        full = np.where(np.isfinite(boots), boots, np.inf)
        with np.errstate(invalid="ignore"):  # a percentile next to an infinite one is unbounded (NaN → None)
            low, high = np.percentile(full, [2.5, 97.5])
        return _finite(value), _finite(low), _finite(high)
    low, high = np.percentile(finite, [2.5, 97.5])
    return _finite(value), float(low), float(high)


def budget_numbers(help_items: np.ndarray, align_items: np.ndarray, norms: np.ndarray, budget: float,
                   n_boot: int, seed: int) -> dict[str, Interval]:
    """``norm_at_budget`` and ``alignment_gain_at_budget`` from per-item curves over ``norms``
    (helpfulness ``(n_q, m)``, alignment ``(n_a, m)``), both measured or predicted alike."""
    if not budget > 0:
        raise TheoryError(f"the budget must be a positive loss of P(correct), got {budget}")
    h_mean, a_mean = help_items.mean(axis=0, keepdims=True), align_items.mean(axis=0, keepdims=True)
    norm = first_crossing(h_mean, norms, budget)
    gain = _at(a_mean, norms, norm) - a_mean[:, 0]
    hb = help_items[boot_indices(len(help_items), max(n_boot, 1), seed)].mean(axis=1)
    ab = align_items[boot_indices(len(align_items), max(n_boot, 1), seed + 1)].mean(axis=1)
    norm_b = first_crossing(hb, norms, budget)
    gain_b = _at(ab, norms, norm_b) - ab[:, 0]
    return {"norm_at_budget": _interval(norm[0], norm_b, unbounded_high=True),
            "alignment_gain_at_budget": _interval(gain[0], gain_b)}


def probe_responses(records: Sequence[Mapping[str, Any]], h: float) -> tuple[HelpfulnessResponse, AlignmentResponse]:
    """The helpfulness and alignment responses of one entry's records at the norms 0, ±h."""
    probe = Probe(h=float(h), has_2h=False)
    return helpfulness_response(records, probe=probe), alignment_response(records, probe=probe)


def entry_numbers(records: Sequence[Mapping[str, Any]], h: float, budget: float, *, n_boot: int = 200,
                  seed: int = 0) -> dict[str, Interval]:
    """Alignment slope, helpfulness' r² coefficient with its spread/drift, the norm at the budget
    and the alignment gained there, each (value, low, high), for the records at 0 and ±h."""
    helpful, aligned = probe_responses(records, h)
    dec = decompose(helpful, aligned, n_boot=max(n_boot, 1), seed=seed)
    norms = np.linspace(0.0, BUDGET_SEARCH_STEPS * h, _SEARCH_POINTS)
    out = {name: (_finite(e.value), _finite(e.low), _finite(e.high)) for name, e in (
        ("alignment_slope", dec.alignment_slope), ("helpfulness_curvature", dec.quadratic),
        ("spread", dec.spread), ("drift", dec.drift))}
    out.update(budget_numbers(item_curves(helpful, norms), item_curves(aligned, norms), norms, budget, n_boot, seed))
    return out


# --- separation ----------------------------------------------------------------------------


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney)."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def separation_numbers(test_aligned: np.ndarray, test_misaligned: np.ndarray, threshold: float, *,
                       n_boot: int = 200, seed: int = 0) -> dict[str, Interval]:
    """Held-out accuracy of ``projection > threshold`` as "aligned" and the AUC, over held-out pairs'
    projections (a pair's two states resampled together)."""
    a, m = np.asarray(test_aligned, float), np.asarray(test_misaligned, float)
    if len(a) < 2 or len(a) != len(m):
        raise TheoryError("separation needs two or more held-out pairs (aligned and misaligned projections)")

    def both(ia):
        return (float(((a[ia] > threshold).mean() + (m[ia] <= threshold).mean()) / 2), auc(a[ia], m[ia]))

    acc, effect = both(np.arange(len(a)))
    boots = np.array([both(ix) for ix in boot_indices(len(a), max(n_boot, 1), seed)])
    return {"separation_accuracy": _interval(acc, boots[:, 0]), "separation_effect": _interval(effect, boots[:, 1])}


def correlation(x: Sequence[float | None], y: Sequence[float | None]) -> dict[str, float | int | None]:
    """Pearson r of the pairs where both are known, with its 95 % Fisher-z interval."""
    pairs = np.array([(a, b) for a, b in zip(x, y) if a is not None and b is not None
                      and math.isfinite(a) and math.isfinite(b)], dtype=float).reshape(-1, 2)
    n = len(pairs)
    if n < 4 or pairs[:, 0].std() == 0 or pairs[:, 1].std() == 0:
        return {"r": None, "low": None, "high": None, "n": n}
    r = float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1])
    z, se = math.atanh(max(min(r, 0.999999), -0.999999)), 1.0 / math.sqrt(n - 3)
    return {"r": r, "low": math.tanh(z - 1.96 * se), "high": math.tanh(z + 1.96 * se), "n": n}


# --- a measured sweep, for --confirm -------------------------------------------------------


def measured_numbers(records: Sequence[Mapping[str, Any]], budget: float, *, n_boot: int = 200,
                     seed: int = 0) -> dict[str, Interval]:
    """The same numbers from a full sweep's items: the alignment slope by central differences at
    the grid's smallest symmetric pair, the norm at the budget on the measured curve."""
    from repe_tradeoff.theory.io.response import choose_probe

    align = [r for r in records if r.get("kind") == "alignment"]
    helpful = [r for r in records if r.get("kind") == "helpfulness"]
    if not align or not helpful:
        raise TheoryError("a confirming sweep needs both an alignment and a helpfulness task")
    slope_probe = choose_probe(float(r["norm"]) for r in align)
    aligned = alignment_response(align, probe=Probe(slope_probe.h, False))
    slope = decompose(helpfulness_response(helpful, probe=Probe(slope_probe.h, False)), aligned,
                      n_boot=max(n_boot, 1), seed=seed).alignment_slope
    norms = sorted({float(r["norm"]) for r in helpful if float(r["norm"]) >= 0})

    def table(rows, field):
        items = sorted({repr(r["item"]) for r in rows})
        pos, col = {k: i for i, k in enumerate(items)}, {x: j for j, x in enumerate(norms)}
        out = np.full((len(items), len(norms)), np.nan)
        for r in rows:
            if float(r["norm"]) in col and r.get(field) is not None:
                out[pos[repr(r["item"])], col[float(r["norm"])]] = float(r[field])
        return out[np.isfinite(out).all(axis=1)]

    out = {"alignment_slope": (_finite(slope.value), _finite(slope.low), _finite(slope.high))}
    out.update(budget_numbers(table(helpful, "helpfulness"), table(align, "alignment"), np.array(norms),
                              budget, n_boot, seed))
    return out
