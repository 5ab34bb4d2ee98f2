"""The second-order response: predict a sweep's curves from the norms 0 and ±h (and ±2h).

Works on ``items.jsonl`` records given as plain dicts. For each item the probe norms give,
by central differences, the first and second derivatives of every option score ``s``
(helpfulness) and of the logit gap ``Δ = ℓa − ℓm`` (alignment)::

    g = (s(h) − s(−h)) / 2h          c = (s(h) + s(−h) − 2 s(0)) / h²
    d = (s(2h) − 2 s(h) + 2 s(−h) − s(−2h)) / 2h³      (third derivative, needs ±2h)

Predictions, each a mean over items with a 95 % bootstrap band over items::

    helpfulness         P(r) = mean_q softmax(s0 + r g + r² c / 2)[answer]
    helpfulness_vocab   P(r) = mean_q min(1, exp(s_answer(r)))
    alignment           A(r) = mean_q 2 σ(Δ0 + r Δ' + r² Δ'' / 2) − 1

With ``p = softmax(s0)``, ``e`` the one-hot of the answer, ``∇P = p_c (e − p)`` and
``∇²P = p_c [(e − p)(e − p)ᵀ − (diag p − p pᵀ)]``, the mean P(correct) expands as::

    P(r) ≈ P(0) + r ∇P·g + r² (½ gᵀ∇²P g + ½ ∇P·c)
                  linear       spread        drift

and the alignment slope at 0 is ``mean 2 σ'(Δ0) Δ'`` (both in :mod:`.response_summary`).
The quadratic through 0, ±h misses a cubic ``d r³/6`` by ``d (r³ − h² r) / 6``; the *trust
radius* is the smallest ``|r|`` at which adding that error moves the predicted mean curve by
more than ``tolerance``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import TheoryError

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
    """Per-item score derivatives of one helpfulness task.

    Arrays are ``(n_items, n_options)``, padded where items have fewer options (score
    ``-inf``, derivatives 0). ``d`` (third derivative) is None without ±2h.
    """

    task: str
    probe: Probe
    items: list[Any]
    answers: np.ndarray
    s0: np.ndarray
    g: np.ndarray
    c: np.ndarray
    d: np.ndarray | None
    has_vocab: bool
    tolerance: float
    n_dropped: int = 0
    trust_radius: float | None = None
    trust_radius_vocab: float | None = None


@dataclass(frozen=True)
class AlignmentResponse:
    """Per-item logit-gap derivatives of one alignment task (arrays of ``n_items``)."""

    task: str
    probe: Probe
    items: list[Any]
    delta0: np.ndarray
    g: np.ndarray
    c: np.ndarray
    d: np.ndarray | None
    tolerance: float
    n_dropped: int = 0
    trust_radius: float | None = None


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


def _derivatives(v: np.ndarray, probe: Probe):
    """Central differences along axis 0 of values at ``probe.norms``."""
    h = probe.h
    if probe.has_2h:
        m2, m1, z, p1, p2 = v
    else:
        m1, z, p1 = v
    g = (p1 - m1) / (2 * h)
    c = (p1 + m1 - 2 * z) / h**2
    d = (p2 - 2 * p1 + 2 * m1 - m2) / (2 * h**3) if probe.has_2h else None
    return z, g, c, d


def helpfulness_response(
    records: Iterable[Mapping[str, Any]],
    task: str | None = None,
    *,
    probe: Probe | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> HelpfulnessResponse:
    """Score derivatives of a helpfulness task from its records at the probe norms."""
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
    z, g, c, d = _derivatives(v, probe)
    z = np.where(valid, z, -np.inf)
    has_vocab = all(vals[0].get("helpfulness_vocab") is not None for _, vals in items)
    resp = HelpfulnessResponse(
        task=task, probe=probe, items=[items[i][0] for i in kept], answers=answers,
        s0=z, g=g, c=c, d=d, has_vocab=has_vocab, tolerance=float(tolerance),
        n_dropped=dropped + len(items) - len(kept),
    )
    if d is None:
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
    """Logit-gap derivatives of an alignment task from its records at the probe norms."""
    task, rows = _task_rows(list(records), task, "alignment")
    probe, items, dropped = _probe_values(rows, probe, "logit_gap")
    k = len(probe.norms)
    v = np.array([[float(vals[j]["logit_gap"]) for _, vals in items] for j in range(k)])
    keep = np.isfinite(v).all(axis=0)
    if not keep.any():
        raise TheoryError(f"no item of {task!r} has a finite logit_gap at every probe norm")
    z, g, c, d = _derivatives(v[:, keep], probe)
    resp = AlignmentResponse(
        task=task, probe=probe, items=[it for (it, _), ok in zip(items, keep) if ok],
        delta0=z, g=g, c=c, d=d, tolerance=float(tolerance),
        n_dropped=dropped + int((~keep).sum()),
    )
    return resp if d is None else replace(resp, trust_radius=trust_radius(resp, tolerance=tolerance))


# --- per-item curves -------------------------------------------------------------------


def _cubic_error(d: np.ndarray, r: np.ndarray, h: float) -> np.ndarray:
    """What the quadratic through 0, ±h misses of a cubic ``d r³/6`` (zero at 0, ±h)."""
    poly = r * (r * r - h * h) / 6.0
    return d[..., None] * poly if d.ndim == 1 else d[:, None, :] * poly[None, :, None]


def _helpfulness_items(resp: HelpfulnessResponse, r: np.ndarray, vocab: bool, cubic: bool):
    """Per-item predicted P(correct), shape ``(n_items, len(r))``."""
    s = (
        resp.s0[:, None, :]
        + r[None, :, None] * resp.g[:, None, :]
        + (r * r)[None, :, None] * resp.c[:, None, :] / 2
    )
    if cubic:
        s = s + _cubic_error(resp.d, r, resp.probe.h)
    idx = np.arange(len(resp.answers))
    if vocab:
        return np.exp(np.minimum(s[idx, :, resp.answers], 0.0))  # = min(1, exp(s)), no overflow
    shifted = s - s.max(axis=2, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    return np.exp(logp[idx, :, resp.answers])


def _alignment_items(resp: AlignmentResponse, r: np.ndarray, cubic: bool):
    gap = resp.delta0[:, None] + r[None, :] * resp.g[:, None] + (r * r)[None, :] * resp.c[:, None] / 2
    if cubic:
        gap = gap + _cubic_error(resp.d, r, resp.probe.h)
    return np.tanh(gap / 2)  # = 2σ(gap) − 1


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
    return _band(_helpfulness_items(resp, r, vocab, cubic=False), r, n_boot, seed)


def predict_alignment(
    resp: AlignmentResponse, norms: Iterable[float], *, n_boot: int = 200, seed: int = 0
) -> Prediction:
    """Predicted mean alignment ``2σ(Δ(r)) − 1`` over ``norms``."""
    r = norm_array(norms)
    return _band(_alignment_items(resp, r, cubic=False), r, n_boot, seed)


def trust_radius(
    resp: HelpfulnessResponse | AlignmentResponse, *, vocab: bool = False,
    tolerance: float | None = None,
) -> float | None:
    """Smallest ``|r|`` where the estimated cubic moves the predicted mean curve by > tolerance.

    None without ±2h; ``inf`` when it stays below tolerance out to 64 probe steps.
    """
    if resp.d is None:
        return None
    tol = resp.tolerance if tolerance is None else float(tolerance)
    if not tol > 0:
        raise TheoryError(f"tolerance must be > 0, got {tol}")
    reach = _TRUST_SEARCH_STEPS * resp.probe.h
    out = math.inf
    for sign in (1.0, -1.0):
        r = sign * np.linspace(0.0, reach, _TRUST_GRID_POINTS)
        if isinstance(resp, AlignmentResponse):
            quad, cub = (_alignment_items(resp, r, cubic=k).mean(axis=0) for k in (False, True))
        else:
            quad, cub = (_helpfulness_items(resp, r, vocab, cubic=k).mean(axis=0) for k in (False, True))
        over = np.flatnonzero(np.abs(cub - quad) > tol)
        if over.size:
            out = min(out, float(abs(r[over[0]])))
    return out


def item_curves(resp: HelpfulnessResponse | AlignmentResponse, norms: Iterable[float]) -> np.ndarray:
    """Each item's predicted value over ``norms`` (``(n_items, len(norms))``): P(correct) over the
    options for helpfulness, ``2σ(Δ(r)) − 1`` for alignment (the curves the bands average)."""
    r = norm_array(norms)
    if isinstance(resp, AlignmentResponse):
        return _alignment_items(resp, r, cubic=False)
    return _helpfulness_items(resp, r, False, cubic=False)
