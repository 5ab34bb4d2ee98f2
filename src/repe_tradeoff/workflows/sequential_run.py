"""Run the sequential plan (:mod:`repe_tradeoff.workflows.sequential`) as a series of sweep steps.

Each pass is an extension of the run's grid by the plan's next norms, measured by
:func:`repe_tradeoff.workflows.sweep.run_sweep` into the same ``items.jsonl``/``points.jsonl`` (so every
measurement is a sweep record, and an interrupted run resumes: the plan reads the measured set
again and takes the same decisions). Fluency tasks measure ``kl`` at every norm; their 24-token
continuations are generated at the end, only at 0, r* and the break-down norms, and replace those
norms' records. ``config.json`` records the plan's passes, why each norm was measured and why
the plan stopped (``sequential``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from repe_tradeoff.errors import SweepError
from repe_tradeoff.runs.chunks import whole_records
from repe_tradeoff.workflows.sequential import (
    STOP_REASONS,
    Measured,
    PlanSettings,
    SequentialPlanError,
    aligned_sign,
    continuation_norms,
    next_step,
    recommended,
    sig,
    summarize,
)

log = logging.getLogger(__name__)

#: The probe step as a fraction of the steered layers' mean residual norm (as ``predict``'s).
PROBE_FRACTION = 0.0125
#: At most this many passes (a guard; the plan's own rules stop it well before).
MAX_PASSES = 24


def plan_tasks(tasks: list) -> tuple[list, str | None, str | None, list[str]]:
    """The tasks as the plan sweeps them (fluency: kl only), the budget's helpfulness and alignment
    tasks (the first of each kind scored by likelihood), and the fluency tasks' names."""
    from repe_tradeoff.tasks.choice import LikelihoodTask
    from repe_tradeoff.tasks.text import FluencyTask

    swept = [replace(t, continuations=False) if isinstance(t, FluencyTask) else t for t in tasks]
    helpful = next((t.name for t in tasks if isinstance(t, LikelihoodTask) and t.kind == "helpfulness"), None)
    align = next((t.name for t in tasks if isinstance(t, LikelihoodTask) and t.kind == "alignment"), None)
    if helpful is None:
        raise SequentialPlanError(
            "the sequential plan finds the norm where helpfulness has lost the budget, so it needs a "
            "likelihood-scored helpfulness task (e.g. --helpfulness basic-qa); or give --points N (a dense "
            "automatic grid) or an explicit grid such as --norms=-2:2:0.25")
    return swept, helpful, align, [t.name for t in tasks if isinstance(t, FluencyTask)]


def run_sequential(lm, plan, vector, out: Path, make_config: Callable[[list[float], dict], dict], *,
                   budget: str, scale: float | None, limit: int | None, progress=None) -> dict:
    """Measure the plan's norms into ``out`` step by step; return the final ``config.json``.

    ``make_config(grid, record)`` is the sweep's config.json for ``grid`` with ``record`` as its
    ``sequential`` entry; ``scale`` is the steered layers' mean residual norm (the probe is
    :data:`PROBE_FRACTION` of it)."""
    from repe_tradeoff.theory.decisions.budget import parse_budget
    from repe_tradeoff.theory.errors import TheoryError
    from repe_tradeoff.theory.response.refit import refit_edge, refit_helpfulness
    from repe_tradeoff.workflows.sweep import run_sweep

    value, relative = parse_budget(budget)
    plan.tasks, helpful, align, fluency = plan_tasks(plan.tasks)
    h = probe_step(scale)
    recorded = _recorded_record(out)
    passes: list[dict] = list(recorded.get("passes", [])) if recorded.get("probe") == h else []
    grid = sorted({float(r) for p in passes for r in p["norms"]})
    record = {"budget": str(budget), "probe": h, "passes": passes}
    if grid:  # resume: finish the recorded grid first (an interrupted step is computed again)
        run_sweep(lm.model, lm.tokenizer, vector, plan, out, config=make_config(grid, record), limit=limit,
                  progress=progress)
    stopped: dict[str, str] = {}
    bracket = None
    for _ in range(MAX_PASSES):
        records = whole_records(out)
        points, p0 = summarize(records, helpfulness=helpful, alignment=align, fluency=fluency)
        points = {r: p for r, p in points.items() if r in {sig(x) for x in grid}}
        cap = value * p0 if relative and p0 is not None else value
        settings = PlanSettings(budget=cap, h=h)

        def predict_edge(step_h: float, points=points, records=records, settings=settings) -> float | None:
            try:
                refit = refit_helpfulness(records, helpful, step_h, leave_out=broken_norms(points))
            except TheoryError:
                return None
            outer = max(abs(r) for r in points)
            sign = aligned_sign(points, step_h)
            return refit_edge(refit, sign, settings.budget, reach=outer * settings.guess_factor)

        step = next_step(points, settings, predict_edge)
        stopped, bracket, probe_h = step.stopped, step.bracket, step.h
        if step.done:
            break
        passes.append({"norms": {f"{r:g}": why for r, why in sorted(step.norms.items())}})
        grid = sorted(set(grid) | set(step.norms))
        log.info("sequential pass %d: %s", len(passes), ", ".join(f"{r:g} ({w})" for r, w in step.norms.items()))
        run_sweep(lm.model, lm.tokenizer, vector, plan, out, config=make_config(grid, record), limit=limit,
                  progress=progress)
    h = probe_h or h
    r_star = recommended(points, cap)
    continued = continuation_norms(points, r_star) if fluency else []
    if continued:
        _continue_fluency(lm, plan, vector, out, continued, fluency)
    words = {k: v.format(tolerance=settings.tolerance, max_edge_steps=settings.max_edge_steps,
                         margin=settings.margin, max_doublings=settings.max_doublings)
             for k, v in STOP_REASONS.items()}
    record.update({
        "budget_limit": cap, "helpfulness_task": helpful, "alignment_task": align,
        "probe_step": h, "aligned_side": int(aligned_sign(points, h)), "norms_measured": len(grid),
        "bracket": None if bracket is None else [bracket[0], bracket[1]], "recommended": r_star,
        "stopped": {k: {"reason": v, "text": words.get(v, v)} for k, v in stopped.items()},
        "continuations": continued, "broken": broken_norms(points),
        "summary": summary_sentence(len(grid), len(passes), stopped, bracket, words),
    })
    record["refit"] = _refit_record(whole_records(out), helpful, h, record["broken"])
    config = make_config(grid, record)
    _record_plan(out, record)
    return config


def broken_norms(points) -> list[float]:
    """The measured norms a break-down criterion marks (left out of the refit, as out of ``fit``'s fits)."""
    return sorted(r for r, p in points.items() if p.broken)


def _refit_record(records: list[dict], task: str, h: float, broken: list[float]) -> dict | None:
    """The refit's trust radius per side against the probe's alone (None when it cannot be fitted)."""
    from repe_tradeoff.theory.errors import TheoryError
    from repe_tradeoff.theory.response.refit import refit_helpfulness, trust_radius

    try:
        refit = refit_helpfulness(records, task, h, leave_out=broken)
    except TheoryError:
        return None
    probe = refit.base.trust_radius
    radius = {side: (r if math.isfinite(r) else None) for side, r in trust_radius(refit).items()}  # None: unbounded
    return {"task": task, "norms": len(refit.norms), "trust_radius": radius,
            "probe_trust_radius": None if probe is None or not math.isfinite(probe) else probe}


def summary_sentence(n: int, passes: int, stopped: dict[str, str], bracket, words: dict[str, str]) -> str:
    """One sentence: how many norms were measured and why the plan stopped there."""
    edge = words.get(stopped.get("edge"), "the search ended")
    lo, hi = bracket or (None, None)
    found = edge if hi is None else f"the budget edge lies between r = {lo:.4g} and r = {hi:.4g} ({edge})"
    sides = "; ".join(f"{side} side: {words[stopped[side]]}" for side in ("aligned", "misaligned") if side in stopped)
    return (f"{n} norms measured in {passes} passes (sequential plan): {found}; outward for the plots, "
            f"{sides or 'until the pass limit'}.")


def _recorded_record(out: Path) -> dict:
    from repe_tradeoff.runs import RunFileError, recorded_config

    try:
        config = recorded_config(out) or {}
    except RunFileError:
        return {}
    record = config.get("sequential")
    return record if isinstance(record, dict) else {}


def _record_plan(out: Path, record: dict) -> None:
    """Write the finished plan into config.json (the sweep keeps the recorded file when its grid is done)."""
    from repe_tradeoff.runs import recorded_config, write_config
    from repe_tradeoff.runs.processes import process_group

    if process_group()[1] != 0:
        return
    write_config(out, {**recorded_config(out), "sequential": record})


def _continue_fluency(lm, plan, vector, out: Path, norms: list[float], fluency: list[str]) -> None:
    """Generate the continuations of the fluency tasks at ``norms`` and put them into those records
    (``perplexity``, ``generated_tokens``, ``response``; their ``kl`` is kept); norms that have them
    already are skipped. Every passage goes in one call, which batches as the row budget allows."""
    from repe_tradeoff.engine.batching import BatchBudget, ChunkRunner
    from repe_tradeoff.engine.scoring import Steering
    from repe_tradeoff.runs import norm_key, read_item_rows, write_points
    from repe_tradeoff.runs.chunks import replace_records
    from repe_tradeoff.runs.processes import process_group, run_lock

    _world, rank, barrier = process_group()
    if rank == 0:
        with run_lock(out):
            wanted = {norm_key(r) for r in norms}
            held = {(rec["task"], norm_key(rec["norm"]), json.dumps(rec["item"])): rec for rec in read_item_rows(out)
                    if rec.get("task") in fluency and norm_key(rec["norm"]) in wanted}
            todo = sorted({key[1] for key, rec in held.items()
                           if rec.get("perplexity") is None and rec.get("generated_tokens") is None})
            if todo:
                steering = Steering(vector, tuple(plan.layers), plan.positions, plan.operator, plan.share_lower,
                                    plan.share_prompts)
                runner = ChunkRunner(lm.model, lm.tokenizer, replace(plan, norms=todo), steering,
                                     BatchBudget(plan.batch_size))
                fresh: dict[tuple[str, float, str], dict] = {}
                for task in plan.tasks:
                    if task.name not in fluency:
                        continue
                    ids = sorted({rec["item"] for (name, _, _), rec in held.items() if name == task.name})
                    continued = task.continue_items(runner, ids)
                    for k, r in enumerate(todo):
                        for j, item in enumerate(ids):
                            key = (task.name, r, json.dumps(item))
                            if key in held:
                                fresh[key] = {**held[key], **continued[k * len(ids) + j]}
                replace_records(out / "items.jsonl", fresh)
                write_points(out)
    barrier()


def is_sequential(settings) -> bool:
    """Whether a sweep's settings ask for the sequential plan (``norms: auto`` without ``points``)."""
    return bool(settings.auto) and settings.points is None


def probe_step(scale: float | None) -> float:
    """The first probe step, to 2 significant digits (so its halvings are exact in the files' 6)."""
    return sig(PROBE_FRACTION * scale if scale and math.isfinite(scale) else 0.1, 2)


__all__ = ["Measured", "SweepError", "is_sequential", "plan_tasks", "probe_step", "run_sequential"]
