"""The response: predict a sweep's curves from the probe norms 0, ±h (and ±2h).

Works on ``items.jsonl`` records given as plain dicts. For each item the probe gives, per
quantity, a :class:`~.response_model.ResponseCurve` (see :mod:`.response_model`): with three
norms the quadratic of the central differences, with five the *saturating* curve
``f(0) + g r + t r³/6 + c r² / (1 + √(1 + κ r²))`` through all five values (``t`` the third
derivative), whose curvature ``c`` fades beyond ``|r| ≈ 1/√κ``. The quantities are the
option-score *margins* ``u_j = s_j − s_answer`` (helpfulness: the options' softmax depends on
nothing else), the
answer's own score ``s_answer`` (full-vocabulary helpfulness) and the logit gap
``Δ = ℓa − ℓm`` (alignment). Predictions, each a mean over items with a 95 % bootstrap band
over items::

    helpfulness         P(r) = mean_q softmax(u(r))[answer] = mean_q 1 / Σ_j exp(u_j(r))
    helpfulness_vocab   P(r) = mean_q min(1, exp(s_answer(r)))
    alignment           A(r) = mean_q 2 σ(Δ(r)) − 1

With ``p = softmax(u(0))``, ``e`` the one-hot of the answer, ``∇P = p_c (e − p)`` and
``∇²P = p_c [(e − p)(e − p)ᵀ − (diag p − p pᵀ)]``, the mean P(correct) expands as::

    P(r) ≈ P(0) + r ∇P·g + r² (½ gᵀ∇²P g + ½ ∇P·c)
                  linear       spread        drift

with ``g``, ``c`` the margins' slope and curvature at 0 as the probe resolves them (the
central differences, five-point with ±2h; in :mod:`.response_summary`), and
the alignment slope at 0 is ``mean 2 σ'(Δ0) Δ'``. The *trust radius* (five norms only) is the
smallest ``|r|`` at which the predicted mean curve and that of the quartic polynomial through
the same five probe values differ by more than ``tolerance``: beyond it the probe alone does
not decide the curve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.response.model import ResponseCurve, fit_curve

DEFAULT_TOLERANCE = 0.01
#: The trust radius is searched out to this many probe steps (beyond: ``inf``).
_TRUST_SEARCH_STEPS = 64
_TRUST_GRID_POINTS = 2049


@dataclass(frozen=True)
class Probe:
    """The symmetric probe of a grid: the norms 0, ±h, and ±2h when ``has_2h``."""

    h: float
    has_2h: bool

    @property
    def norms(self) -> tuple[float, ...]:
        h = self.h
        return (-2 * h, -h, 0.0, h, 2 * h) if self.has_2h else (-h, 0.0, h)


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= 1e-6 * scale


def find_probe(norms: Iterable[float]) -> Probe:
    """The probe of a grid: the smallest ``h > 0`` with both ``±h`` present, and 0.

    ``has_2h`` says whether ``±2h`` are in the grid too (needed for the trust radius).
    """
    grid = sorted({float(r) for r in norms})
    if not grid:
        raise TheoryError("the grid is empty: the response needs the norms 0 and ±h")
    scale = max(abs(r) for r in grid) or 1.0

    def has(x: float) -> bool:
        return any(_close(x, r, scale) for r in grid)

    shown = ", ".join(f"{r:g}" for r in grid[:12]) + (" ..." if len(grid) > 12 else "")
    if not has(0.0):
        raise TheoryError(
            f"the grid ({shown}) has no norm 0: the response needs 0 and a symmetric pair ±h; "
            "add 0 to the grid"
        )
    pairs = [r for r in grid if r > 1e-6 * scale and has(-r)]
    if not pairs:
        raise TheoryError(
            f"the grid ({shown}) has no symmetric pair ±h: the response needs 0, +h and -h "
            "(and ±2h for a trust radius); use a grid symmetric about 0"
        )
    h = pairs[0]
    return Probe(h=h, has_2h=has(2 * h) and has(-2 * h))


@dataclass(frozen=True)
class Estimate:
    """A mean over items with its 95 % bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Prediction:
    """A predicted mean curve over ``norms`` with its 95 % bootstrap band over items."""

    norms: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class HelpfulnessResponse:
    """The response of one helpfulness task.

    ``margins`` holds, per item and option, the curve of ``s_j − s_answer`` (arrays
    ``(n_items, n_options)``, padded where items have fewer options: value ``-inf``, the rest
    0); ``answer_score`` that of ``s_answer`` (arrays of ``n_items``).
    """

    task: str
    probe: Probe
    items: list[Any]
    answers: np.ndarray
    margins: ResponseCurve
    answer_score: ResponseCurve
    has_vocab: bool
    tolerance: float
    n_dropped: int = 0
    trust_radius: float | None = None
    trust_radius_vocab: float | None = None

    @property
    def model(self) -> str:
        return "saturating" if self.probe.has_2h else "quadratic"


@dataclass(frozen=True)
class AlignmentResponse:
    """The response of one alignment task: the curve of each item's logit gap."""

    task: str
    probe: Probe
    items: list[Any]
    gap: ResponseCurve
    tolerance: float
    n_dropped: int = 0
    trust_radius: float | None = None

    @property
    def model(self) -> str:
        return "saturating" if self.probe.has_2h else "quadratic"


def _kind(row: Mapping[str, Any]) -> str:
    if row.get("kind"):
        return str(row["kind"])
    return "alignment" if ("logit_gap" in row or "alignment" in row) else "helpfulness"


def task_kinds(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The tasks of ``items.jsonl`` records and their kind, in order of appearance."""
    out: dict[str, str] = {}
    for row in records:
        kind = _kind(row)
        out.setdefault(str(row.get("task") or kind), kind)
    return out


def _task_rows(records, task: str | None, kind: str) -> tuple[str, list[Mapping[str, Any]]]:
    rows = [r for r in records if _kind(r) == kind]
    names = list(dict.fromkeys(str(r.get("task") or kind) for r in rows))
    if not names:
        raise TheoryError(f"no {kind} records: give the items.jsonl of a sweep with a {kind} task")
    if task is None:
        if len(names) > 1:
            raise TheoryError(f"several {kind} tasks ({', '.join(names)}): name one with task=")
        task = names[0]
    elif task not in names:
        raise TheoryError(f"no {kind} task {task!r}; the records have: {', '.join(names)}")
    return task, [r for r in rows if str(r.get("task") or kind) == task]


def _probe_values(rows, probe: Probe | None, field: str):
    """Per item, the value of ``field`` at each probe norm (items missing one are dropped)."""
    if probe is None:
        probe = find_probe(float(r["norm"]) for r in rows)
    pnorms = probe.norms
    scale = max(abs(x) for x in pnorms)
    by_item: dict[str, tuple[Any, dict[int, Any]]] = {}
    for r in rows:
        slot = next((k for k, x in enumerate(pnorms) if _close(float(r["norm"]), x, scale)), None)
        if slot is None or r.get(field) is None:
            continue
        key = repr(r["item"])
        by_item.setdefault(key, (r["item"], {}))[1][slot] = r
    complete = [(item, vals) for item, vals in by_item.values() if len(vals) == len(pnorms)]
    if not complete:
        raise TheoryError(
            f"no item has `{field}` at every probe norm ({', '.join(f'{x:g}' for x in pnorms)}): "
            "sweep a grid that contains them"
        )
    return probe, complete, len(by_item) - len(complete)


def helpfulness_response(
    records: Iterable[Mapping[str, Any]],
    task: str | None = None,
    *,
    probe: Probe | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> HelpfulnessResponse:
    """The response of a helpfulness task from its records at the probe norms."""
    task, rows = _task_rows(list(records), task, "helpfulness")
    probe, items, dropped = _probe_values(rows, probe, "scores")
    n_opt = max(len(vals[0]["scores"]) for _, vals in items)
    k = len(probe.norms)
    v = np.zeros((k, len(items), n_opt))
    valid = np.zeros((len(items), n_opt), dtype=bool)
    answers = np.zeros(len(items), dtype=int)
    kept: list[int] = []
    for i, (item, vals) in enumerate(items):
        lens = {len(vals[j]["scores"]) for j in range(k)}
        if len(lens) != 1:
            raise TheoryError(f"item {item!r} of {task!r} has a different number of options per norm")
        ans = vals[0].get("answer")
        scores = np.array([vals[j]["scores"] for j in range(k)], dtype=float)
        if ans is None or not 0 <= int(ans) < scores.shape[1] or not np.isfinite(scores).all():
            continue
        n = scores.shape[1]
        v[:, i, :n] = scores
        valid[i, :n] = True
        answers[i] = int(ans)
        kept.append(i)
    if not kept:
        raise TheoryError(f"no item of {task!r} has an answer and finite scores at the probe norms")
    v, valid, answers = v[:, kept], valid[kept], answers[kept]
    answer_scores = v[:, np.arange(len(kept)), answers]
    margins = fit_curve(np.where(valid, v - answer_scores[..., None], 0.0), probe.h, probe.has_2h)
    has_vocab = all(vals[0].get("helpfulness_vocab") is not None for _, vals in items)
    resp = HelpfulnessResponse(
        task=task, probe=probe, items=[items[i][0] for i in kept], answers=answers,
        margins=replace(margins, value=np.where(valid, margins.value, -np.inf)),
        answer_score=fit_curve(answer_scores, probe.h, probe.has_2h),
        has_vocab=has_vocab, tolerance=float(tolerance),
        n_dropped=dropped + len(items) - len(kept),
    )
    if not probe.has_2h:
        return resp
    return replace(
        resp,
        trust_radius=trust_radius(resp, tolerance=tolerance),
        trust_radius_vocab=trust_radius(resp, vocab=True, tolerance=tolerance) if has_vocab else None,
    )


def alignment_response(
    records: Iterable[Mapping[str, Any]],
    task: str | None = None,
    *,
    probe: Probe | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> AlignmentResponse:
    """The response of an alignment task (its logit gaps) from its records at the probe norms."""
    task, rows = _task_rows(list(records), task, "alignment")
    probe, items, dropped = _probe_values(rows, probe, "logit_gap")
    k = len(probe.norms)
    v = np.array([[float(vals[j]["logit_gap"]) for _, vals in items] for j in range(k)])
    keep = np.isfinite(v).all(axis=0)
    if not keep.any():
        raise TheoryError(f"no item of {task!r} has a finite logit_gap at every probe norm")
    resp = AlignmentResponse(
        task=task, probe=probe, items=[it for (it, _), ok in zip(items, keep) if ok],
        gap=fit_curve(v[:, keep], probe.h, probe.has_2h), tolerance=float(tolerance),
        n_dropped=dropped + int((~keep).sum()),
    )
    if not probe.has_2h:
        return resp
    return replace(resp, trust_radius=trust_radius(resp, tolerance=tolerance))


# --- per-item curves -------------------------------------------------------------------


def _helpfulness_items(resp: HelpfulnessResponse, r: np.ndarray, vocab: bool, polynomial: bool):
    """Per-item predicted P(correct), shape ``(n_items, len(r))``."""
    if vocab:
        s = resp.answer_score.at(r, polynomial=polynomial)
        return np.exp(np.minimum(s, 0.0)).T  # = min(1, exp(s)), no overflow
    u = resp.margins.at(r, polynomial=polynomial)  # (len(r), n_items, n_options); answer's u = 0
    top = u.max(axis=2, keepdims=True)
    log_total = top[..., 0] + np.log(np.exp(u - top).sum(axis=2))
    return np.exp(-log_total).T  # softmax at the answer = 1 / Σ exp(u_j)


def _alignment_items(resp: AlignmentResponse, r: np.ndarray, polynomial: bool):
    return np.tanh(resp.gap.at(r, polynomial=polynomial) / 2).T  # = 2σ(gap) − 1


def boot_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _band(per_item: np.ndarray, norms: np.ndarray, n_boot: int, seed: int) -> Prediction:
    mean = per_item.mean(axis=0)
    if n_boot <= 0:
        return Prediction(norms, mean, mean.copy(), mean.copy())
    boots = per_item[boot_indices(per_item.shape[0], n_boot, seed)].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5], axis=0)
    return Prediction(norms, mean, low, high)


def norm_array(norms: Iterable[float]) -> np.ndarray:
    r = np.asarray(list(norms), dtype=float)
    if r.ndim != 1 or not r.size or not np.isfinite(r).all():
        raise TheoryError("norms must be a non-empty list of finite numbers")
    return r


def predict_helpfulness(
    resp: HelpfulnessResponse, norms: Iterable[float], *, vocab: bool = False,
    n_boot: int = 200, seed: int = 0,
) -> Prediction:
    """Predicted mean P(correct) over ``norms`` (options-restricted, or full-vocabulary)."""
    if vocab and not resp.has_vocab:
        raise TheoryError(
            f"task {resp.task!r} has no helpfulness_vocab in its records: predict with vocab=False"
        )
    r = norm_array(norms)
    return _band(_helpfulness_items(resp, r, vocab, polynomial=False), r, n_boot, seed)


def predict_alignment(
    resp: AlignmentResponse, norms: Iterable[float], *, n_boot: int = 200, seed: int = 0
) -> Prediction:
    """Predicted mean alignment ``2σ(Δ(r)) − 1`` over ``norms``."""
    r = norm_array(norms)
    return _band(_alignment_items(resp, r, polynomial=False), r, n_boot, seed)


def trust_radius(
    resp: HelpfulnessResponse | AlignmentResponse, *, vocab: bool = False,
    tolerance: float | None = None,
) -> float | None:
    """Smallest ``|r|`` where the predicted mean curve and the quartic polynomial's through
    the same five probe values differ by more than tolerance.

    None without ±2h; ``inf`` when they agree out to 64 probe steps.
    """
    if not resp.probe.has_2h:
        return None
    tol = resp.tolerance if tolerance is None else float(tolerance)
    if not tol > 0:
        raise TheoryError(f"tolerance must be > 0, got {tol}")
    reach = _TRUST_SEARCH_STEPS * resp.probe.h
    out = math.inf
    for sign in (1.0, -1.0):
        r = sign * np.linspace(0.0, reach, _TRUST_GRID_POINTS)
        with np.errstate(over="ignore", invalid="ignore"):  # a quartic far out: ±inf in σ, exp
            if isinstance(resp, AlignmentResponse):
                model, poly = (_alignment_items(resp, r, polynomial=k).mean(axis=0) for k in (False, True))
            else:
                model, poly = (_helpfulness_items(resp, r, vocab, polynomial=k).mean(axis=0)
                               for k in (False, True))
            over = np.flatnonzero(~(np.abs(model - poly) <= tol))
        if over.size:
            out = min(out, float(abs(r[over[0]])))
    return out


def item_curves(resp: HelpfulnessResponse | AlignmentResponse, norms: Iterable[float]) -> np.ndarray:
    """Each item's predicted value over ``norms`` (``(n_items, len(norms))``): P(correct) over the
    options for helpfulness, ``2σ(Δ(r)) − 1`` for alignment (the curves the bands average)."""
    r = norm_array(norms)
    if isinstance(resp, AlignmentResponse):
        return _alignment_items(resp, r, polynomial=False)
    return _helpfulness_items(resp, r, False, polynomial=False)
