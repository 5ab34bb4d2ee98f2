"""The sequential plan: measure where the budgeted answer is decided, not everywhere.

Pure functions over measured points (no torch, no files), so every rule can be checked on a
synthetic curve. The plan, in passes (each pass measures the next norm of every open thread):

1. *probe*: 0, ±h, ±2h (the second-order response's five norms); where h on the aligned side already
   loses more than a quarter of the budget, or ±h breaks the model, ``h`` is halved (at most
   ``max_halvings`` times; the old ±h become the new ±2h) and probed again;
2. *edge* (the aligned side, where alignment grows): measure at the budget edge the refit
   response model predicts (a little beyond it, so that one measurement usually brackets it),
   then, inside the bracket ``lo < edge ≤ hi`` of measured norms (``lo`` within the budget,
   ``hi`` the first one past it), at the refit prediction of the edge clipped to the bracket's
   middle 80 %, until the bracket is at most ``tolerance`` of ``hi`` (*bracket*), or the loss'
   95 % bootstrap intervals at both ends contain the budget while the bracket is within
   ``noise_width`` of ``hi`` (*noise*: the items cannot tell the ends apart), or ``max_edge_steps``
   norms were spent (*steps*). Without a prediction the edge search doubles;
3. *outward*, on both sides, for the shape of the plots: ``outward_factor`` × the outermost
   measured norm, until a norm is broken (the break-down criteria of
   :mod:`repe_tradeoff.theory.checks.breakdown` that need no continuation: KL, forced-choice
   likelihood), nothing measured moved over the last step (*plateau*), or the norm reaches
   ``h · 2^max_doublings`` (*limit*). Both sides go outward from the first pass after the probe,
   beside the edge search: a pass costs more than a norm (each pass runs r = 0 again, as the
   reference of the KL and of the logit shift), so every open thread advances in every pass.

The plan is a function of the *set* of measured points, not of the order they came in, so a
resumed run takes the same decisions as an uninterrupted one. The recommended norm is the
measured one the budget rule of :mod:`repe_tradeoff.theory.decisions.budget` picks; the continuations of
neutral text (the expensive part of the fluency task) are generated only at 0, r* and each
side's break-down (or outermost) norm (:func:`continuation_norms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from repe_tradeoff.errors import RepeTradeoffError

#: The reasons a thread of the plan stops, as config.json's ``sequential.stopped`` words them.
STOP_REASONS = {
    "bracket": "the budget edge is bracketed by measured norms within {tolerance:.0%} of r",
    "noise": "the loss' 95% intervals at both ends of the bracket contain the budget: more items, not more norms, would decide it",
    "steps": "the edge search spent its {max_edge_steps} norms",
    "no-loss": "no measured norm up to the search's largest lost more than the budget",
    "no-alignment": "no alignment task: the edge is searched on the positive side",
    "breakdown": "a break-down criterion holds (KL or forced-choice likelihood)",
    "plateau": "nothing measured moved by {margin:g} over the last outward step",
    "limit": "the outward search reached h · 2^{max_doublings}",
}


class SequentialPlanError(RepeTradeoffError):
    """The sequential plan cannot run on these tasks; the message says what to give instead."""


@dataclass(frozen=True)
class PlanSettings:
    """The plan's stopping rules (see the module notes)."""

    budget: float  # the absolute loss of P(correct) allowed (a relative budget resolved by the caller)
    h: float  # the probe step
    tolerance: float = 0.05
    noise_width: float = 0.15
    max_edge_steps: int = 8
    outward_factor: float = 4.0
    max_doublings: int = 12
    guess_factor: float = 16.0  # a predicted edge farther than this × the outermost norm is not trusted
    overshoot: float = 0.04  # aim this far past the predicted edge, to bracket it in one measurement
    margin: float = 0.02
    max_halvings: int = 4  # the first probe step has 2 significant digits: 4 halvings stay within 6


@dataclass(frozen=True)
class Measured:
    """What the plan reads at one measured norm (means over items)."""

    norm: float
    loss: float | None  # P(0) − P(r) of the budget's helpfulness task
    loss_low: float | None = None  # its 95 % bootstrap interval (paired over items)
    loss_high: float | None = None
    alignment: float | None = None
    broken: bool = False


@dataclass
class Step:
    """The norms of the next pass and why each is measured (empty when the plan is done)."""

    norms: dict[float, str] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)  # thread -> reason key, for finished threads
    bracket: tuple[float, float] | None = None  # (lo, hi) on the aligned side, as signed norms
    h: float | None = None  # the probe step the plan settled on

    @property
    def done(self) -> bool:
        return not self.norms


def sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}") + 0.0


def probe_norms(h: float) -> list[float]:
    return [sig(x) for x in (-2 * h, -h, 0.0, h, 2 * h)]


def aligned_sign(points: Mapping[float, Measured], h: float) -> float:
    """+1 or −1: the side where alignment grows (from ±h; +1 when there is no alignment)."""
    lo, hi = points.get(sig(-h)), points.get(sig(h))
    if lo is None or hi is None or lo.alignment is None or hi.alignment is None:
        return 1.0
    return -1.0 if hi.alignment < lo.alignment else 1.0


def bracket(points: Mapping[float, Measured], sign: float, budget: float) -> tuple[float, float | None]:
    """``(lo, hi)`` as distances from 0 on the side of ``sign``: ``hi`` the smallest measured norm whose
    loss exceeds the budget (None when none does), ``lo`` the largest measured one below it within it
    (0 when none is)."""
    side = sorted((sign * r, p) for r, p in points.items() if sign * r > 0 and p.loss is not None)
    hi = next((x for x, p in side if p.loss > budget + 1e-12), None)
    lo = max((x for x, p in side if (hi is None or x < hi) and p.loss <= budget + 1e-12), default=0.0)
    return lo, hi


def _edge_step(points: Mapping[float, Measured], s: PlanSettings, sign: float,
               predict_edge: Callable[[], float | None]) -> tuple[float | None, str | None, str]:
    """(the next norm of the edge search as a distance from 0, or None; the stop reason; why)."""
    lo, hi = bracket(points, sign, s.budget)
    outer = max((sign * r for r in points if sign * r > 0), default=0.0)
    reach = outer if hi is None else hi  # outward norms past the bracket are not the search's
    spent = sum(1 for r in points if 2 * s.h * (1 + 1e-9) < sign * r <= reach)  # norms beyond the probe
    if hi is not None:
        if hi - lo <= s.tolerance * hi:
            return None, "bracket", ""
        p_lo, p_hi = points[sig(sign * lo)] if lo else None, points[sig(sign * hi)]
        undecided = all(p is not None and p.loss_low is not None and p.loss_low <= s.budget <= p.loss_high
                        for p in (p_lo, p_hi))
        if undecided and hi - lo <= s.noise_width * hi:
            return None, "noise", ""
        if spent >= s.max_edge_steps:
            return None, "steps", ""
        guess = predict_edge()
        width = hi - lo
        mid = lo + width / 2 if guess is None or not math.isfinite(guess) else guess
        return min(max(mid, lo + 0.1 * width), hi - 0.1 * width), None, "bisect"
    if outer >= s.h * 2.0 ** s.max_doublings or spent >= s.max_edge_steps:
        return None, "no-loss", ""
    guess = predict_edge()
    if guess is not None and math.isfinite(guess) and guess * (1 + s.overshoot) <= outer * s.guess_factor:
        # past the prediction; at least 10 % past the outermost norm when the prediction lies within it
        return max(guess * (1 + s.overshoot), 1.1 * outer), None, "predicted edge"
    return 2 * outer, None, "bracket (doubling)"


def _outward_step(points: Mapping[float, Measured], s: PlanSettings, sign: float) -> tuple[float | None, str | None]:
    side = sorted((sign * r, p) for r, p in points.items() if sign * r > 0)
    if not side:
        return 2 * s.h, None
    if any(p.broken for _, p in side):
        return None, "breakdown"
    outer, last = side[-1]
    if len(side) >= 2 and outer >= s.outward_factor * 2 * s.h:
        prev = side[-2][1]
        moved = [abs(a - b) for a, b in ((last.loss, prev.loss), (last.alignment, prev.alignment))
                 if a is not None and b is not None]
        if moved and max(moved) < s.margin:
            return None, "plateau"
    if outer >= s.h * 2.0 ** s.max_doublings:
        return None, "limit"
    return min(s.outward_factor * outer, s.h * 2.0 ** s.max_doublings), None


def probe(points: Mapping[float, Measured], s: PlanSettings) -> tuple[float, list[float]]:
    """The probe step and the probe norms still to measure: ``h``, halved while h on the aligned side
    already loses more than a quarter of the budget or ±h breaks the model (the edge then lies within
    2h: too close to 0 for the probe to resolve the curve before it). A loss of ``q`` times the
    quarter halves it ``⌈log2 √q⌉`` times at once (the loss grows like r²); a single halving adds
    only ±h/2, since the old ±h are the new ±2h. At most ``max_halvings`` halvings in all."""
    h = s.h
    while True:
        missing = [r for r in probe_norms(h) if r not in points]
        if any(r in missing for r in (sig(-h), 0.0, sig(h))):
            return h, missing  # all five at once: a probe is rarely shrunk, a pass is dear
        ahead = points[sig(aligned_sign(points, h) * h)]  # the side whose edge is searched
        broken = points[sig(-h)].broken or points[sig(h)].broken
        quarter = s.budget / 4
        if (not broken and ahead.loss is not None and ahead.loss <= quarter) or h <= s.h / 2**s.max_halvings * 1.0001:
            return h, [r for r in probe_norms(h) if r not in points]
        times = 3 if broken or ahead.loss is None else max(1, math.ceil(math.log2(math.sqrt(ahead.loss / quarter))))
        h = max(h / 2**times, s.h / 2**s.max_halvings)


def next_step(points: Mapping[float, Measured], s: PlanSettings,
              predict_edge: Callable[[float], float | None] = lambda h: None) -> Step:
    """The norms of the next pass (see the module notes); ``predict_edge(h)`` gives the refit response
    model's budget edge (probe step ``h``) as a distance from 0 on the aligned side (None: no prediction)."""
    h, missing = probe(points, s)
    if missing:
        return Step({r: "probe" for r in missing}, h=h)
    s = replace(s, h=h)
    sign = aligned_sign(points, s.h)
    step = Step(h=h)
    has_loss = any(p.loss is not None for p in points.values())
    if not has_loss:
        raise SequentialPlanError("the sequential plan needs a multiple-choice helpfulness task to measure the "
                                  "loss against the budget: add --helpfulness, or give --points N for a dense grid")
    edge, reason, why = _edge_step(points, s, sign, lambda: predict_edge(h))
    lo, hi = bracket(points, sign, s.budget)
    step.bracket = (sign * lo, None if hi is None else sign * hi)
    if edge is not None:
        step.norms[sig(sign * edge)] = why
    else:
        step.stopped["edge"] = reason or "bracket"
    for name, side in (("misaligned", -sign), ("aligned", sign)):  # beside the edge search: a pass is dear
        r, reason = _outward_step(points, s, side)
        if r is None:
            step.stopped[name] = reason or "limit"
        elif sig(side * r) not in points:
            step.norms.setdefault(sig(side * r), "outward")
    return step


def recommended(points: Mapping[float, Measured], budget: float) -> float:
    """The budget rule on measured points: the norm with the most alignment gain whose loss is within
    the budget (ties: the smaller |r|), 0 when none gains (as :func:`~.theory.budget.budget_recommendation`)."""
    base = points.get(0.0)
    a0 = base.alignment if base is not None and base.alignment is not None else 0.0
    best, best_key = 0.0, None
    for r, p in points.items():
        if p.loss is None or p.alignment is None or p.loss > budget + 1e-12 or p.broken:
            continue
        gain = p.alignment - a0
        if gain > 1e-12 and (best_key is None or (-gain, abs(r)) < best_key):
            best, best_key = r, (-gain, abs(r))
    return best


def continuation_norms(points: Mapping[float, Measured], r_star: float) -> list[float]:
    """0, r* and, per side, the first broken norm walking out from 0 (else the outermost one)."""
    out = {0.0, sig(r_star)}
    for sign in (-1.0, 1.0):
        side = sorted((r for r in points if sign * r > 0), key=abs)
        broken = [r for r in side if points[r].broken]
        if broken or side:
            out.add(broken[0] if broken else side[-1])
    return sorted(out)


# --------------------------------------------------------------------------- from records
def _boot(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def summarize(records: Iterable[Mapping[str, Any]], *, helpfulness: str | None, alignment: str | None,
              fluency: Sequence[str] = (), kl_limit: float = 2.0, logprob_drop: float = math.log(10.0),
              n_boot: int = 200, seed: int = 0) -> tuple[dict[float, Measured], float | None]:
    """Per measured norm, what the plan reads, from ``items.jsonl`` records; and P(correct) at r = 0.

    The loss and its interval are paired over items (each item's P(0) − P(r)); a norm is broken
    when a fluency task's mean KL exceeds ``kl_limit`` or the likelier forced-choice response lost
    more than ``logprob_drop`` nats per token against r = 0 (the rules of theory.breakdown).
    """
    helpful: dict[float, dict[str, float]] = {}
    align: dict[float, list[float]] = {}
    logprob: dict[float, list[float]] = {}
    kl: dict[float, list[float]] = {}
    for rec in records:
        if "norm" not in rec:
            continue
        r, task = sig(float(rec["norm"])), rec.get("task")
        if task == helpfulness and rec.get("helpfulness") is not None:
            helpful.setdefault(r, {})[repr(rec["item"])] = float(rec["helpfulness"])
        elif task == alignment and rec.get("alignment") is not None:
            align.setdefault(r, []).append(float(rec["alignment"]))
            if rec.get("response_logprob") is not None:
                logprob.setdefault(r, []).append(float(rec["response_logprob"]))
        elif task in fluency and rec.get("kl") is not None:
            kl.setdefault(r, []).append(float(rec["kl"]))
    norms = set(helpful) | set(align) | set(kl)
    base = helpful.get(0.0)
    p0 = float(np.mean(list(base.values()))) if base else None
    lp0 = float(np.mean(logprob[0.0])) if logprob.get(0.0) else None
    out: dict[float, Measured] = {}
    for r in sorted(norms):
        loss = low = high = None
        if base and r in helpful:
            keys = sorted(base.keys() & helpful[r].keys())
            diffs = np.array([base[k] - helpful[r][k] for k in keys])
            if diffs.size:
                loss = float(diffs.mean())
                boots = diffs[_boot(diffs.size, n_boot, seed)].mean(axis=1) if n_boot > 0 else np.array([loss])
                low, high = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
        broken = bool(kl.get(r)) and float(np.mean(kl[r])) > kl_limit
        if lp0 is not None and logprob.get(r) and lp0 - float(np.mean(logprob[r])) > logprob_drop:
            broken = True
        a = float(np.mean(align[r])) if align.get(r) else None
        out[r] = Measured(r, loss, low, high, a, broken)
    return out, p0
