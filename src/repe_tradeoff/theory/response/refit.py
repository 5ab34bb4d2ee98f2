"""The response model refit with every measured norm: the probe's curve, corrected where measured.

The second-order response (:mod:`repe_tradeoff.theory.response.prediction`) predicts each item's option
margins ``u_j(r) = s_j(r) − s_answer(r)`` from the probe 0, ±h, ±2h. Once more norms are measured,
each item's *residual* ``d_j(r_k) = u_j,measured(r_k) − u_j,probe(r_k)`` at every measured norm is
known; the refit margins are ``u_j,probe(r) + d_j(r)`` with ``d`` interpolated linearly in ``r``
between measured norms and held at its outermost value beyond them. The refit curve passes
through every measured point, follows the probe's shape between them, and its 95 % band is the
bootstrap over items as for the probe's prediction. Its *trust radius* on each side is the
largest measured norm out to which every measured norm is predicted within ``tolerance`` by the
refit without it (leave-one-out), and at least the probe's own trust radius.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.response.prediction import (
    HelpfulnessResponse,
    Prediction,
    Probe,
    _band,
    helpfulness_response,
    norm_array,
)


@dataclass(frozen=True)
class Refit:
    """A helpfulness task's probe response and its margins' residuals at the measured norms."""

    base: HelpfulnessResponse
    norms: np.ndarray  # measured norms, sorted, shape (K,)
    residuals: np.ndarray  # (K, n_items, n_options); 0 at padded options

    @property
    def task(self) -> str:
        return self.base.task


def _key(r: float) -> float:
    return float(f"{r:.6g}") + 0.0


def refit_helpfulness(records: Iterable[Mapping[str, Any]], task: str, h: float, *,
                      leave_out: Iterable[float] = ()) -> Refit:
    """The refit of ``task`` from ``items.jsonl`` records at the probe ``0, ±h, ±2h`` and every other norm
    but those of ``leave_out`` (the broken norms, which ``fit`` leaves out of its fits too: a residual
    measured where the model has broken, interpolated back towards r = 0, would bend the curve there)."""
    skip = {_key(float(r)) for r in leave_out}
    rows = [r for r in records if r.get("task") == task and r.get("scores") is not None and "norm" in r
            and _key(float(r["norm"])) not in skip]
    base = helpfulness_response(rows, task, probe=Probe(h, True))
    index = {repr(item): i for i, item in enumerate(base.items)}
    valid = np.isfinite(base.margins.value)
    by_norm: dict[float, dict[int, np.ndarray]] = {}
    for rec in rows:
        i = index.get(repr(rec["item"]))
        if i is None:
            continue
        scores = np.asarray(rec["scores"], dtype=float)
        u = np.zeros(valid.shape[1])
        u[: scores.size] = scores - scores[base.answers[i]]
        by_norm.setdefault(_key(float(rec["norm"])), {})[i] = u
    full = sorted(r for r, items in by_norm.items() if len(items) == len(base.items))
    if not full:
        raise TheoryError(f"no norm has every item of {task!r}: the refit needs complete norms")
    norms = np.array(full)
    measured = np.stack([np.stack([by_norm[r][i] for i in range(len(base.items))]) for r in full])
    model = base.margins.at(norms)
    with np.errstate(invalid="ignore"):
        residuals = np.where(valid, measured - model, 0.0)
    return Refit(base, norms, np.nan_to_num(residuals, nan=0.0, posinf=0.0, neginf=0.0))


def _residual_at(refit: Refit, r: np.ndarray) -> np.ndarray:
    """The residuals interpolated linearly at ``r`` (held beyond the outermost measured norms)."""
    x = refit.norms
    if x.size == 1:
        return np.repeat(refit.residuals, r.size, axis=0)
    pos = np.clip(np.searchsorted(x, r), 1, x.size - 1)
    left, right = x[pos - 1], x[pos]
    w = np.clip((r - left) / (right - left), 0.0, 1.0).reshape(-1, 1, 1)
    return (1 - w) * refit.residuals[pos - 1] + w * refit.residuals[pos]


def item_probabilities(refit: Refit, norms: Iterable[float]) -> np.ndarray:
    """Per item, the refit P(correct) over ``norms``: shape ``(n_items, len(norms))``."""
    r = norm_array(norms)
    u = refit.base.margins.at(r) + _residual_at(refit, r)  # padded options stay −inf
    top = u.max(axis=2, keepdims=True)
    log_total = top[..., 0] + np.log(np.exp(u - top).sum(axis=2))
    return np.exp(-log_total).T


def predict_refit(refit: Refit, norms: Iterable[float], *, n_boot: int = 200, seed: int = 0) -> Prediction:
    """The refit mean P(correct) over ``norms`` with its 95 % bootstrap band over items."""
    r = norm_array(norms)
    return _band(item_probabilities(refit, r), r, n_boot, seed)


def refit_edge(refit: Refit, sign: float, limit: float, reach: float, points: int = 4001) -> float | None:
    """Where, as a distance from 0 on the side of ``sign``, the refit mean P(correct) first falls more
    than ``limit`` below its value at 0 (linear between grid points); None within ``reach``."""
    x = np.linspace(0.0, reach, points)
    curve = item_probabilities(refit, sign * x).mean(axis=0)
    loss = curve[0] - curve
    over = np.flatnonzero(loss > limit)
    if not over.size:
        return None
    j = int(over[0])
    if j == 0:
        return 0.0
    a, b = loss[j - 1], loss[j]
    return float(x[j - 1] + (x[j] - x[j - 1]) * (limit - a) / (b - a))


def _without(refit: Refit, k: int) -> Refit:
    keep = np.arange(refit.norms.size) != k
    return Refit(refit.base, refit.norms[keep], refit.residuals[keep])


def trust_radius(refit: Refit, tolerance: float = 0.01) -> dict[str, float]:
    """Per side (``negative``, ``positive``), the largest measured |r| out to which every measured
    non-probe norm is predicted within ``tolerance`` of its measured mean by the refit without it
    (the outermost measured norm of a side cannot be checked so, and is not counted); at least the probe's own trust radius."""
    probe = {_key(x) for x in refit.base.probe.norms}
    floor = refit.base.trust_radius or 0.0
    measured = item_probabilities(refit, refit.norms).mean(axis=0)
    out = {}
    for name, sign in (("negative", -1.0), ("positive", 1.0)):
        radius = floor
        order = sorted((k for k, r in enumerate(refit.norms) if sign * r > 0), key=lambda k: abs(refit.norms[k]))
        for k in order:
            r = float(refit.norms[k])
            if k in (0, refit.norms.size - 1):
                break  # the outermost norm has no neighbour beyond it to check it against
            if _key(r) not in probe:
                guess = item_probabilities(_without(refit, k), [r]).mean()
                if not abs(guess - measured[k]) <= tolerance:
                    break
            radius = max(radius, abs(r))
        out[name] = radius if math.isfinite(radius) else float("inf")
    return out
