"""A norm grid found from the model's response (``--norms auto``) and refined where curves change.

No torch here: the caller hands :func:`find_grid` an ``evaluate(norms) -> records`` function (the
records of ``items.jsonl`` at those norms, on a few items). The search, per side of ``r = 0``:

1. *probe*: 0 and ±h (h shrunk or grown ×8 until ±h moves the curves a little, not a lot);
2. *guess*: where the second-order response (:mod:`repe_tradeoff.theory.response.prediction`) predicts the
   side's stopping criterion;
3. *bracket and bisect* on measured values: double until the criterion holds, then bisect between
   the last norm where it did not and the first where it did.

A side stops where helpfulness has fallen ``fraction`` of the way from its r = 0 value to chance, or
alignment is within ``margin`` of its plateau (±1), whichever comes first. The grid's norms are then
placed evenly in the measured change of the curves (linear between evaluated norms) mixed with
evenly in r, always including both ends and the response's probe 0, ±h, ±2h (so that ``fit``
validates the five-norm prediction on every automatic grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repe_tradeoff.errors import RepeTradeoffError

Evaluate = Callable[[list[float]], list[dict]]

CRITERIA = {
    "helpfulness": "helpfulness fell {fraction:.0%} of the way to chance",
    "alignment": "alignment came within {margin:g} of its plateau",
    "plateau": "nothing measured changed by {margin:g} over a doubling of the norm",
    "limit": "neither criterion held by the search's largest norm",
}


class AutoGridError(RepeTradeoffError):
    """The automatic grid cannot be found; the message says what to give instead."""


@dataclass(frozen=True)
class SearchTask:
    """A task the search reads: its name, kind and (helpfulness) chance level."""

    name: str
    kind: str
    chance: float | None = None


@dataclass(frozen=True)
class SearchSettings:
    points: int = 33
    fraction: float = 0.8
    margin: float = 0.05
    bisect_steps: int = 4
    max_doublings: int = 12
    probe_retries: int = 4
    uniform_share: float = 0.3  # part of the grid spread evenly in r, so flat stretches keep points


@dataclass
class Evaluation:
    step: str
    norm: float
    helpfulness: dict[str, float]
    alignment: dict[str, float]

    def record(self) -> dict:
        return {"step": self.step, "norm": self.norm, "helpfulness": self.helpfulness,
                "alignment": self.alignment}


@dataclass
class FoundGrid:
    norms: list[float]
    probe: float
    sides: dict[str, dict[str, Any]]
    evaluations: list[Evaluation] = field(default_factory=list)
    passes: int = 0

    @property
    def range(self) -> list[float]:
        return [self.norms[0], self.norms[-1]]

    def record(self, settings: SearchSettings, search_items: int) -> dict:
        """The ``auto_grid`` entry of config.json (docs/run-files.md)."""
        return {"points": settings.points, "search_items": search_items, "probe": self.probe,
                "range": self.range, "fraction": settings.fraction, "margin": settings.margin,
                "sides": self.sides, "passes": self.passes,
                "evaluations": [e.record() for e in self.evaluations]}


def sig(x: float, digits: int = 6) -> float:
    """``x`` to ``digits`` significant digits (grid norms written to the files)."""
    return float(f"{x:.{digits}g}") + 0.0


def _means(records: list[dict], tasks: Sequence[SearchTask]) -> dict[float, tuple[dict, dict]]:
    """Per norm: (helpfulness mean per task, alignment mean per task)."""
    sums: dict[tuple[float, str, str], list[float]] = {}
    kinds = {t.name: t.kind for t in tasks}
    for rec in records:
        kind = kinds.get(rec.get("task"))
        value = rec.get(kind) if kind else None
        if value is not None:
            sums.setdefault((sig(rec["norm"]), rec["task"], kind), []).append(float(value))
    out: dict[float, tuple[dict, dict]] = {}
    for (r, task, kind), values in sums.items():
        out.setdefault(r, ({}, {}))[0 if kind == "helpfulness" else 1][task] = sum(values) / len(values)
    return out


class _Search:
    def __init__(self, evaluate: Evaluate, tasks: Sequence[SearchTask], settings: SearchSettings):
        self.evaluate, self.tasks, self.s = evaluate, list(tasks), settings
        self.seen: dict[float, Evaluation] = {}
        self.order: list[Evaluation] = []
        self.records: list[dict] = []
        self.passes = 0

    def run(self, norms: list[float], step: str) -> None:
        new = sorted({sig(r) for r in norms} - set(self.seen))
        if not new:
            return
        records = self.evaluate(new)
        self.passes += 1
        self.records += records
        means = _means(records, self.tasks)
        for r in new:
            h, a = means.get(r, ({}, {}))
            ev = Evaluation(step, r, {k: round(v, 6) for k, v in h.items()}, {k: round(v, 6) for k, v in a.items()})
            self.seen[r] = ev
            self.order.append(ev)

    # -- criteria ------------------------------------------------------------------------------
    def fallen(self, r: float) -> float | None:
        """Mean over helpfulness tasks of how far helpfulness fell from r = 0 towards chance."""
        parts = []
        for t in self.tasks:
            if t.kind != "helpfulness" or t.chance is None:
                continue
            p0, p = self.seen[0.0].helpfulness.get(t.name), self.seen[r].helpfulness.get(t.name)
            if p0 is not None and p is not None and p0 - t.chance > 0.02:  # at chance already: says nothing
                parts.append((p0 - p) / (p0 - t.chance))
        return sum(parts) / len(parts) if parts else None

    def plateau_gap(self, r: float) -> float | None:
        """Largest distance of an alignment task from the plateau (±1) it moves towards at r."""
        gaps = []
        for t in self.tasks:
            a0, a = self.seen[0.0].alignment.get(t.name), self.seen[r].alignment.get(t.name)
            if t.kind == "alignment" and a0 is not None and a is not None:
                toward = math.copysign(1.0, a - a0) if a != a0 else None  # the plateau it heads for
                gaps.append(2.0 if toward is None else abs(toward - a))
        return max(gaps) if gaps else None

    def stopped(self, r: float) -> str | None:
        fallen, gap = self.fallen(r), self.plateau_gap(r)
        if fallen is not None and fallen >= self.s.fraction:
            return "helpfulness"
        if gap is not None and gap <= self.s.margin:
            return "alignment"
        return None

    def flat(self, near: float, far: float) -> bool:
        """Whether every measured value at ``far`` is within the margin of its value at ``near``."""
        a, b = self.seen[sig(near)], self.seen[sig(far)]
        pairs = [(a.helpfulness, b.helpfulness), (a.alignment, b.alignment)]
        return all(abs(x[k] - y[k]) < self.s.margin for x, y in pairs for k in x.keys() & y.keys())

    def moved(self, r: float) -> float:
        """How much ±r moved the curves: fraction fallen, or alignment change (0 when unknown)."""
        fallen = abs(self.fallen(r) or 0.0)
        shift = max((abs(self.seen[r].alignment.get(t.name, 0.0) - self.seen[0.0].alignment.get(t.name, 0.0))
                     for t in self.tasks if t.kind == "alignment"), default=0.0)
        return max(fallen, shift / 2)


def _predicted_stop(search: _Search, h: float, sign: float, settings: SearchSettings) -> float | None:
    """Where the second-order response through 0, ±h predicts the side's criterion to hold."""
    from repe_tradeoff.theory.errors import TheoryError
    from repe_tradeoff.theory.response.prediction import (
        Probe,
        alignment_response,
        helpfulness_response,
        predict_alignment,
        predict_helpfulness,
    )

    probe = [r for r in search.records if sig(r["norm"]) in (-h, 0.0, h)]
    reach = sign * h * np.geomspace(1.0, 2.0 ** settings.max_doublings, 241)
    hits = []
    for t in search.tasks:
        try:
            if t.kind == "helpfulness" and t.chance is not None:
                curve = predict_helpfulness(helpfulness_response(probe, t.name, probe=Probe(h, False)), reach, n_boot=0).mean
                p0 = search.seen[0.0].helpfulness.get(t.name)
                if p0 is None or p0 - t.chance <= 0.02:
                    continue
                hit = np.flatnonzero((p0 - curve) / (p0 - t.chance) >= settings.fraction)
            elif t.kind == "alignment":
                curve = predict_alignment(alignment_response(probe, t.name, probe=Probe(h, False)), reach, n_boot=0).mean
                hit = np.flatnonzero(1.0 - np.abs(curve) <= settings.margin)
            else:
                continue
        except TheoryError:  # e.g. records without scores (a generation task): no prediction
            continue
        if hit.size:
            hits.append(abs(float(reach[hit[0]])))
    return min(hits) if hits else None


def _choose_probe(search: _Search, h0: float, settings: SearchSettings) -> float:
    """A probe step that moves the curves visibly (≥ 0.2 %) but stays local (≤ 20 % of the way)."""
    h, way = sig(h0, 3), 0
    for _ in range(settings.probe_retries):
        search.run([-h, 0.0, h], "probe")
        moved = max(search.moved(-h), search.moved(h))
        step = -1 if moved > 0.2 else 1 if moved < 0.002 else 0
        if step == 0 or step == -way:  # good, or it would go back to a step already tried
            return h
        way, h = step, sig(h * 8.0**step, 3)
    search.run([-h, 0.0, h], "probe")
    return h


def find_grid(evaluate: Evaluate, tasks: Sequence[SearchTask], h0: float,
              settings: SearchSettings | None = None) -> FoundGrid:
    """The grid of ``settings.points`` norms over the range where the curves change (see the module)."""
    s = settings or SearchSettings()
    if s.points < 5:
        raise AutoGridError(f"--points {s.points}: an automatic grid needs at least 5 norms (0, ±h and both ends)")
    if not any(t.kind in ("helpfulness", "alignment") for t in tasks):
        raise AutoGridError("the automatic grid needs a helpfulness or a likelihood-scored alignment task; "
                            "give --norms as a grid, e.g. -2:2:0.25")
    if not (h0 > 0 and math.isfinite(h0)):
        raise AutoGridError(f"the first probe step must be a positive number, got {h0!r}")
    search = _Search(evaluate, tasks, s)
    h = _choose_probe(search, h0, s)
    sides: dict[str, dict[str, Any]] = {}
    active = {}
    for name, sign in (("negative", -1.0), ("positive", 1.0)):
        stop = search.stopped(sign * h)
        if stop:
            sides[name] = {"end": sign * h, "criterion": stop}
            continue
        guess = _predicted_stop(search, h, sign, s)
        first = max(2 * h, min(guess or 8 * h, h * 2.0 ** s.max_doublings))
        active[name] = {"sign": sign, "low": h, "high": None, "next": sig(first), "doublings": 0,
                        "predicted": None if guess is None else sig(sign * guess)}
    while any(a["high"] is None for a in active.values()):  # bracket: double until the criterion holds
        growing = [a for a in active.values() if a["high"] is None]
        search.run([a["sign"] * a["next"] for a in growing], "bracket")
        for a in growing:
            r = a["next"]
            if search.stopped(a["sign"] * sig(r)):
                a["high"] = r
            elif a["doublings"] and search.flat(a["sign"] * a["low"], a["sign"] * sig(r)):
                a["high"], a["plateau"] = a["low"], True  # past here more norm changes nothing measured
            elif a["doublings"] >= s.max_doublings:
                a["high"], a["limit"] = r, True
            else:
                a["low"], a["next"], a["doublings"] = r, sig(2 * r), a["doublings"] + 1
    for _ in range(s.bisect_steps):  # bisect between the last miss and the first hit
        open_ = [a for a in active.values()
                 if not (a.get("limit") or a.get("plateau")) and a["high"] / a["low"] > 1.15]
        if not open_:
            break
        for a in open_:
            lo, hi = a["low"], a["high"]
            a["mid"] = sig(math.sqrt(lo * hi) if hi / lo > 4 else (lo + hi) / 2)
        search.run([a["sign"] * a["mid"] for a in open_], "bisect")
        for a in open_:
            a["high" if search.stopped(a["sign"] * a["mid"]) else "low"] = a["mid"]
    for name, a in active.items():
        end = sig(a["sign"] * a["high"])
        criterion = "limit" if a.get("limit") else "plateau" if a.get("plateau") else search.stopped(end)
        sides[name] = {"end": end, "criterion": criterion,
                       "predicted": a["predicted"]}
    for name, side in sides.items():
        side["helpfulness_fallen"] = _round(search.fallen(side["end"]))
        side["alignment"] = {k: v for k, v in search.seen[side["end"]].alignment.items()}
        side.setdefault("predicted", None)
    norms = place_norms(search.seen, h, sides["negative"]["end"], sides["positive"]["end"], search, s)
    return FoundGrid(norms, h, sides, search.order, search.passes)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def place_norms(seen: dict[float, Evaluation], h: float, low: float, high: float, search: _Search,
                s: SearchSettings) -> list[float]:
    """``s.points`` norms from ``low`` to ``high``, evenly in the curves' measured change (mixed with
    evenly in r), with 0, ±h and (where the range reaches them and ``s.points`` ≥ 7) ±2h among them."""
    rs = sorted(r for r in seen if low <= r <= high)
    change = np.zeros(len(rs))
    for i in range(1, len(rs)):
        a, b = seen[rs[i - 1]], seen[rs[i]]
        step = sum(abs(_fraction(search, b, t) - _fraction(search, a, t)) for t in search.tasks)
        change[i] = change[i - 1] + step
    dense = np.linspace(low, high, 4001)
    progress = np.interp(dense, rs, change)
    total = progress[-1]
    mix = s.uniform_share * (dense - low) / (high - low) + (1 - s.uniform_share) * (progress / total if total > 0 else (dense - low) / (high - low))
    # the required norms are fixed (±2h only where the range and the count leave room); the others
    # go to the stretches between them in proportion to each stretch's share of the mix, evenly in
    # the mix within it (so no stretch is left bare)
    wanted = (low, high, 0.0, -h, h, -2 * h, 2 * h)  # in order of priority
    anchors = sorted(list(dict.fromkeys(x for x in wanted if low <= x <= high))[: s.points])
    at = np.interp(anchors, dense, mix)
    free = max(s.points - len(anchors), 0)
    share = np.diff(at) / (at[-1] - at[0]) * free
    counts = np.floor(share).astype(int)
    for i in np.argsort(counts - share)[: free - counts.sum()]:  # largest remainders
        counts[i] += 1
    placed = list(anchors)
    for i, n in enumerate(counts):
        levels = at[i] + (at[i + 1] - at[i]) * np.arange(1, n + 1) / (n + 1)
        placed += list(np.interp(levels, mix, dense))
    norms = sorted({sig(r) for r in placed})
    while len(norms) < s.points:  # coincident norms: split the widest gap
        gaps = [(norms[i + 1] - norms[i], i) for i in range(len(norms) - 1)]
        _, i = max(gaps)
        norms.insert(i + 1, sig((norms[i] + norms[i + 1]) / 2))
    return norms


def _fraction(search: _Search, ev: Evaluation, task: SearchTask) -> float:
    """A task's value on a common scale: helpfulness as the fraction fallen, alignment over its span 2."""
    base = search.seen[0.0]
    if task.kind == "helpfulness":
        p0, p = base.helpfulness.get(task.name), ev.helpfulness.get(task.name)
        if p0 is None or p is None or task.chance is None or p0 - task.chance <= 0.02:
            return 0.0
        return (p0 - p) / (p0 - task.chance)
    a = ev.alignment.get(task.name)
    return 0.0 if a is None else a / 2


# --------------------------------------------------------------------------- refine
def refine_norms(norms: Sequence[float], curves: Sequence[Sequence[float]], k: int) -> list[float]:
    """``k`` new norms where neighbouring points differ most: each gap's difference is the largest
    change of any curve across it; a gap split n ways counts ``difference / (n + 1)`` per piece."""
    grid = sorted(float(r) for r in norms)
    if k < 1:
        return []
    if len(grid) < 2:
        raise AutoGridError("--refine needs a run with at least two norms")
    diffs = []
    for i in range(len(grid) - 1):
        d = max((abs(c[i + 1] - c[i]) for c in curves if math.isfinite(c[i]) and math.isfinite(c[i + 1])),
                default=0.0)
        diffs.append(d if d > 0 else 1e-12 * (grid[i + 1] - grid[i]))
    splits = [0] * len(diffs)
    for _ in range(k):
        i = max(range(len(diffs)), key=lambda j: (diffs[j] / (splits[j] + 1), grid[j + 1] - grid[j]))
        splits[i] += 1
    new = []
    for i, n in enumerate(splits):
        for j in range(1, n + 1):
            new.append(sig(grid[i] + (grid[i + 1] - grid[i]) * j / (n + 1)))
    return sorted(set(new) - set(grid))
