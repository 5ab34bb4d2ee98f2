"""What a response says: the split of helpfulness' Taylor coefficients, rows for
``predicted.jsonl``, and the check of a prediction against a measured sweep.

With ``p = softmax(u0)`` (``u`` the option-score margins against the answer), ``e`` the one-hot
of the answer, ``∇P = p_c (e − p)`` and ``∇²P = p_c [(e − p)(e − p)ᵀ − (diag p − p pᵀ)]``, each
item's P(correct) expands as ``P(0) + r ∇P·g + r² (½ gᵀ∇²P g + ½ ∇P·c)``, with ``g`` and ``c``
the margins' slope and curvature at 0 as the probe resolves them (the central differences:
three-point, or five-point with ±2h, see ``ResponseCurve.resolved_curvature``): the *linear* term, the
*spread* of the slopes ``g`` (the paper's mechanism, A3) and the *drift* of the scores against
the answer (``c``). The alignment slope at 0 is ``mean 2 σ'(Δ0) Δ'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.response.prediction import (
    AlignmentResponse,
    Estimate,
    HelpfulnessResponse,
    boot_indices,
    norm_array,
    predict_alignment,
    predict_helpfulness,
)

# --- decomposition ---------------------------------------------------------------------


@dataclass(frozen=True)
class Decomposition:
    """Taylor coefficients at 0 of the mean P(correct), and the alignment slope at 0.

    ``quadratic = spread + drift`` is the r² coefficient; ``linear`` the r coefficient;
    ``spread_share`` is spread / quadratic (the part the paper's A3 accounts for).
    """

    task: str
    p0: Estimate
    linear: Estimate
    spread: Estimate
    drift: Estimate
    quadratic: Estimate
    spread_share: Estimate
    alignment_task: str | None = None
    alignment_slope: Estimate | None = None


def _estimate(per_item: np.ndarray, boot: np.ndarray) -> Estimate:
    means = per_item[boot].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(per_item.mean()), float(low), float(high))


def helpfulness_terms(resp: HelpfulnessResponse) -> dict[str, np.ndarray]:
    """Per-item ``p0``, ``linear`` (∇P·g), ``spread`` (½ gᵀ∇²P g) and ``drift`` (½ ∇P·c)."""
    u = resp.margins
    s = u.value - u.value.max(axis=1, keepdims=True)
    p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    idx = np.arange(len(resp.answers))
    pc = p[idx, resp.answers]
    e = np.zeros_like(p)
    e[idx, resp.answers] = 1.0
    grad = pc[:, None] * (e - p)
    g, c = u.slope, u.resolved_curvature
    # gᵀ[(e−p)(e−p)ᵀ − (diag p − ppᵀ)]g = ((e−p)·g)² − (Σ p g² − (p·g)²)
    eg = ((e - p) * g).sum(axis=1)
    pg = (p * g).sum(axis=1)
    spread = 0.5 * pc * (eg**2 - ((p * g * g).sum(axis=1) - pg**2))
    return {
        "p0": pc,
        "linear": (grad * g).sum(axis=1),
        "spread": spread,
        "drift": 0.5 * (grad * c).sum(axis=1),
    }


def decompose(
    resp: HelpfulnessResponse, alignment: AlignmentResponse | None = None, *,
    n_boot: int = 1000, seed: int = 0,
) -> Decomposition:
    """Split helpfulness' Taylor coefficients at 0 into linear, spread and drift, with CIs."""
    terms = helpfulness_terms(resp)
    terms["quadratic"] = terms["spread"] + terms["drift"]
    boot = boot_indices(len(resp.answers), max(n_boot, 1), seed)
    est = {k: _estimate(v, boot) for k, v in terms.items()}
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero r² coefficient: NaN share
        shares = terms["spread"][boot].mean(axis=1) / terms["quadratic"][boot].mean(axis=1)
        share = float(terms["spread"].mean() / terms["quadratic"].mean())
    low, high = np.percentile(shares, [2.5, 97.5])
    est["spread_share"] = Estimate(share, float(low), float(high))
    slope = None
    if alignment is not None:
        # 2σ'(Δ) = (1 − tanh²(Δ/2)) / 2, which does not overflow for large |Δ|
        per_item = 0.5 * (1.0 - np.tanh(alignment.gap.value / 2) ** 2) * alignment.gap.slope
        slope = _estimate(per_item, boot_indices(len(per_item), max(n_boot, 1), seed))
    return Decomposition(
        task=resp.task, alignment_task=None if alignment is None else alignment.task,
        alignment_slope=slope, **est,
    )


# --- run-file rows and validation -----------------------------------------------------


def predicted_points(
    norms: Iterable[float], *,
    helpfulness: HelpfulnessResponse | Sequence[HelpfulnessResponse] = (),
    alignment: AlignmentResponse | Sequence[AlignmentResponse] = (),
    n_boot: int = 200, seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows shaped like ``points.jsonl`` (plus ``low``/``high``) for a ``predicted.jsonl``."""
    r = norm_array(norms)
    helps = [helpfulness] if isinstance(helpfulness, HelpfulnessResponse) else list(helpfulness)
    aligns = [alignment] if isinstance(alignment, AlignmentResponse) else list(alignment)
    rows: list[dict[str, Any]] = []

    def emit(task, kind, metric, pred, n):
        for x, m, lo, hi in zip(pred.norms, pred.mean, pred.low, pred.high):
            rows.append({"task": task, "kind": kind, "metric": metric, "norm": float(x),
                         "mean": float(m), "low": float(lo), "high": float(hi), "n": n})

    for h in helps:
        emit(h.task, "helpfulness", "helpfulness",
             predict_helpfulness(h, r, n_boot=n_boot, seed=seed), len(h.answers))
        if h.has_vocab:
            emit(h.task, "helpfulness", "helpfulness_vocab",
                 predict_helpfulness(h, r, vocab=True, n_boot=n_boot, seed=seed), len(h.answers))
    for a in aligns:
        emit(a.task, "alignment", "alignment", predict_alignment(a, r, n_boot=n_boot, seed=seed),
             len(a.items))
    return rows


@dataclass(frozen=True)
class Validation:
    """Predicted vs measured for one task × metric over ``norms`` (the compared window)."""

    task: str
    kind: str
    metric: str
    norms: np.ndarray
    rmse: float
    max_error: float
    window: tuple[float, float]


def _curves(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], tuple[str, dict]]:
    out: dict[tuple[str, str], tuple[str, dict]] = {}
    for row in rows:
        kind = str(row.get("kind") or ("alignment" if row["metric"] == "alignment" else "helpfulness"))
        key = (str(row.get("task") or kind), str(row["metric"]))
        out.setdefault(key, (kind, {}))[1][round(float(row["norm"]), 9)] = float(row["mean"])
    return out


def loss_window(curve: dict[float, float], max_loss: float) -> tuple[float, float] | None:
    """The interval around 0 where the curve stays within ``max_loss`` below its value at 0."""
    norms = sorted(curve)
    if 0.0 not in curve:
        return None
    base, i0 = curve[0.0], norms.index(0.0)
    lo = hi = i0
    while lo > 0 and base - curve[norms[lo - 1]] <= max_loss:
        lo -= 1
    while hi < len(norms) - 1 and base - curve[norms[hi + 1]] <= max_loss:
        hi += 1
    return norms[lo], norms[hi]


def validate(
    predicted: Iterable[Mapping[str, Any]], measured: Iterable[Mapping[str, Any]], *,
    max_loss: float = 0.15,
) -> list[Validation]:
    """RMSE and max error of predicted rows against measured ``points.jsonl`` rows.

    Helpfulness metrics are compared on the interval around r = 0 where the measured curve
    is at most ``max_loss`` below its r = 0 value; alignment on every common norm.
    """
    pred, meas = _curves(predicted), _curves(measured)
    out: list[Validation] = []
    for key, (kind, pcurve) in pred.items():
        if key not in meas:
            continue
        mcurve = meas[key][1]
        common = sorted(set(pcurve) & set(mcurve))
        if kind == "helpfulness":
            window = loss_window(mcurve, max_loss)
            if window is None:
                raise TheoryError(
                    f"measured {key[0]}/{key[1]} has no r = 0 point: the loss window needs it"
                )
            common = [x for x in common if window[0] <= x <= window[1]]
        if not common:
            continue
        err = np.array([pcurve[x] - mcurve[x] for x in common])
        out.append(Validation(
            task=key[0], kind=kind, metric=key[1], norms=np.array(common),
            rmse=float(np.sqrt(np.mean(err**2))), max_error=float(np.abs(err).max()),
            window=(common[0], common[-1]),
        ))
    return out
