"""One way to set up a sweep, for `sweep` and `run` alike: settings → tasks, plan and config.json."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from repe_tradeoff.engine.generation import response_scorer
from repe_tradeoff.errors import SweepError
from repe_tradeoff.runs import RunFileError, recorded_config
from repe_tradeoff.tasks.choice import Task, alignment_task
from repe_tradeoff.tasks.registry import build_task
from repe_tradeoff.tasks.text import FluencyTask
from repe_tradeoff.vectors.vector import SteeringVector, layer_cosines, orthogonalized
from repe_tradeoff.workflows.settings import AUTO, SweepSettings
from repe_tradeoff.workflows.sweep import SweepPlan, run_config

log = logging.getLogger(__name__)


def residual_scale(vector: SteeringVector) -> float | None:
    """The mean residual-stream norm at the vector's layers (None when the vector does not record it)."""
    residual = vector.metadata.get("residual_norms", {})
    values = [residual[str(layer)] for layer in vector.layers if str(layer) in residual]
    return sum(values) / len(values) if values else None


def norm_grid(settings: SweepSettings, vector: SteeringVector) -> tuple[list[float], float]:
    """The absolute grid, and the factor that turned the configured grid into it."""
    if settings.norm_unit == "absolute":
        return settings.grid(), 1.0
    scale = residual_scale(vector) or 1.0
    return [round(r * scale, 6) for r in settings.grid()], scale


def build_tasks(settings: SweepSettings) -> list[Task]:
    """The tasks of the settings' behaviors and helpfulness specs, with their scorers and templates."""
    from repe_tradeoff.data import load_behavior, load_neutral_text

    tasks: list[Task] = []
    for spec in settings.behaviors:
        behavior = load_behavior(spec.name)
        if not behavior.items:
            raise SweepError(
                f"behavior {spec.name!r} has no evaluation items to score; give one with items "
                "(prompt, aligned, misaligned), or measure it only through --helpfulness"
            )
        tasks.append(alignment_task(behavior.name, list(behavior.items), spec.scorer, spec.template))
    tasks += [build_task(spec) for spec in settings.helpfulness]
    for spec in settings.fluency:
        passages = load_neutral_text(spec)
        tasks.append(FluencyTask(f"fluency-{passages.name}", list(passages.passages)))
    if not tasks:
        raise SweepError("nothing to measure: give --alignment BEHAVIOR and/or --helpfulness TASK")
    names = [t.name for t in tasks]
    if len(set(names)) < len(names):
        raise SweepError(f"two tasks are named {next(n for n in names if names.count(n) > 1)!r}: "
                         "give each task once (or rename one of the files)")
    if any(getattr(t, "scorer", None) == "generate" for t in tasks):
        response_scorer(settings.response_scorer)  # a scorer that cannot be loaded fails before the sweep starts
    return tasks


def prepare_sweep(lm, settings: SweepSettings, vector: SteeringVector, layers: list[int], *, model_name: str,
                  command: str | None, extra: dict | None = None, tasks: list[Task] | None = None,
                  out: Path | None = None, refine: int = 0, budget: str = "0.05",
                  progress=None) -> tuple[SweepPlan, dict]:
    """The plan and ``config.json`` of a sweep of ``lm`` steered by ``vector`` at ``layers``.

    ``command`` is the command line that ran (recorded as it is); ``extra`` adds keys to
    config.json that do not change results (the experiment's name, the vector's path); ``tasks``
    are those :func:`build_tasks` made of ``settings``, when built already. With ``norms: auto`` the
    grid is searched (:func:`auto_grid`), or taken from ``out``'s config.json when that records an
    automatic grid of the same sweep; ``refine`` adds that many norms to the grid recorded in ``out``.
    With ``norms: auto`` and no ``points`` the sequential plan measures its norms into ``out`` here
    (:mod:`repe_tradeoff.workflows.sequential_run`; ``budget`` is the helpfulness loss it brackets), and the
    config returned is that of the grid it measured.
    """
    from repe_tradeoff.engine.batching import default_batch_size

    auto = settings.auto
    norms, scale = ([0.0], residual_scale(vector) or 1.0) if auto else norm_grid(settings, vector)
    plan = SweepPlan(
        norms=norms, tasks=tasks or build_tasks(settings), layers=list(layers), positions=settings.positions,
        operator=settings.operator, share_lower=settings.share_lower, share_prompts=settings.share_prompts,
        batch_size=settings.batch_size or default_batch_size(lm.model), chunk_size=settings.chunk_size,
        max_new_tokens=settings.max_new_tokens, response_scorer=settings.response_scorer,
    )
    extras = {"norm_unit": settings.norm_unit, "norm_unit_scale": scale,
              "configured_norms": AUTO if auto else settings.grid(), "command": command,
              "steered_behavior": vector.metadata.get("dataset"), **(extra or {})}

    def config_for(grid: list[float], source: str, record: dict | None = None, keys: dict | None = None) -> dict:
        plan.norms = grid
        more = {"grid_history": [{"source": source, "added": grid}], **({"auto_grid": record} if record else {}),
                **(keys or {})}
        return run_config(plan, vector, model_name=model_name, model_revision=lm.revision, dtype=settings.dtype,
                          extra={**extras, **more})

    sequential = _sequential_record(out) if auto else None
    if auto and (settings.points is None or sequential):  # a sequential run (or its dense extension)
        from repe_tradeoff.workflows.sequential_run import plan_tasks

        plan.tasks = plan_tasks(plan.tasks)[0]
    recorded = _recorded(out, config_for(norms, "grid"), settings.limit)
    if auto and settings.points is None:
        from repe_tradeoff.workflows.sequential_run import run_sequential

        if out is None:
            raise SweepError("the sequential plan measures into a run folder: give --out")
        config = run_sequential(lm, plan, vector, Path(out),
                                lambda grid, rec: config_for(grid, "sequential", keys={"sequential": rec}),
                                budget=budget, scale=residual_scale(vector), limit=settings.limit, progress=progress)
    elif auto and sequential is not None and recorded is not None:  # a sequential run made dense: both grids
        found = _shared(out, lambda: auto_grid(lm, settings, vector, plan))
        grid = sorted({*map(float, recorded["norms"]), *found["norms"]})
        config = config_for(grid, "auto", found["record"], keys={"sequential": sequential})
    elif auto:
        reuse = recorded is not None and _same_search(recorded.get("auto_grid"), settings)
        if reuse:
            config = config_for(recorded["norms"], "auto", recorded["auto_grid"])
        else:
            found = _shared(out, lambda: auto_grid(lm, settings, vector, plan))
            config = config_for(found["norms"], "auto", found["record"])
    elif recorded is not None and _earlier_grid(recorded, norms):
        log.info("%s holds this sweep with its grid extended since; resuming that grid", out)
        config = config_for([float(r) for r in recorded["norms"]], "grid")
    else:
        config = config_for(norms, "grid")
    if refine:
        config = _refined(out, recorded, config, refine, config_for)
    return plan, config


def _sequential_record(out: Path | None) -> dict | None:
    """The ``sequential`` entry of ``out``'s config.json (None: not a sequential run)."""
    try:
        old = recorded_config(out) if out is not None else None
    except RunFileError:
        return None
    record = old.get("sequential") if old is not None else None
    return record if isinstance(record, dict) else None


def _recorded(out: Path | None, config: dict, limit: int | None) -> dict | None:
    """``out``'s config.json when it records this sweep, whatever its grid (else None)."""
    from repe_tradeoff.workflows.sweep import same_settings

    if out is None:
        return None
    try:
        old = recorded_config(out)
    except RunFileError:
        return None  # the sweep itself says what is wrong with it
    return old if old is not None and same_settings(old, {**config, "limit": limit}) else None


def _earlier_grid(recorded: dict, norms: list[float]) -> bool:
    """Whether ``norms`` is the recorded grid as it stood after one of its history's steps (so the
    command that made or extended the folder resumes it as it is now)."""
    from repe_tradeoff.runs import norm_key

    wanted, grid = {norm_key(r) for r in norms}, set()
    for step in recorded.get("grid_history") or []:
        grid |= {norm_key(r) for r in step.get("added", [])}
        if grid == wanted:
            return True
    return False


def _search_items(settings: SweepSettings) -> int:
    return min(settings.search_items, settings.limit or settings.search_items)


def _same_search(record: dict | None, settings: SweepSettings) -> bool:
    return (isinstance(record, dict) and record.get("points") == settings.points
            and record.get("search_items") == _search_items(settings))


def _shared(out: Path | None, compute):
    """``compute()`` in the first process only; the others read its result from the run folder."""
    from repe_tradeoff.runs.processes import computed_once

    return computed_once(out, ".auto_grid.json", compute)


def auto_grid(lm, settings: SweepSettings, vector: SteeringVector, plan: SweepPlan) -> dict:
    """Search the grid on the first ``settings.search_items`` items of each likelihood-scored task:
    ``{"norms": [...], "record": config.json's auto_grid}``."""
    from repe_tradeoff.engine.batching import BatchBudget, ChunkRunner
    from repe_tradeoff.engine.steering import Steering
    from repe_tradeoff.tasks.choice import LikelihoodTask
    from repe_tradeoff.workflows.autogrid import (
        AutoGridError,
        SearchSettings,
        SearchTask,
        find_grid,
    )

    usable = [t for t in plan.tasks if isinstance(t, LikelihoodTask)]
    if not usable:
        raise AutoGridError("--norms auto searches on likelihood-scored tasks (forced-choice, yes-no, "
                            "multiple choice), and this sweep has none: give a grid, e.g. --norms=-2:2:0.25")
    n = _search_items(settings)
    steering = Steering(vector, tuple(plan.layers), plan.positions, plan.operator, plan.share_lower,
                        plan.share_prompts)
    budget = BatchBudget(plan.batch_size)

    def evaluate(norms: list[float]) -> list[dict]:
        runner = ChunkRunner(lm.model, lm.tokenizer, replace(plan, norms=list(norms)), steering, budget)
        return [rec for t in usable for rec in t.score_items(runner, list(range(min(n, t.n_items))))]

    search_tasks = [SearchTask(t.name, t.kind, 1.0 / t.n_choices if t.kind == "helpfulness" else None)
                    for t in usable]
    scale = residual_scale(vector)
    search = SearchSettings(points=settings.points)
    found = find_grid(evaluate, search_tasks, h0=0.01 * scale if scale else 0.1, settings=search)
    log.info("auto grid: %d norms from %g to %g (%d search passes)", len(found.norms), *found.range, found.passes)
    return {"norms": found.norms, "record": found.record(search, n)}


def _refined(out: Path | None, recorded: dict | None, config: dict, k: int, config_for) -> dict:
    """``config`` with ``k`` norms added to ``out``'s recorded grid where its points differ most."""
    from repe_tradeoff.runs import METRICS, norm_key, read_points
    from repe_tradeoff.workflows.autogrid import refine_norms

    points = Path(out) / "points.jsonl" if out is not None else None
    if recorded is None or points is None or not points.is_file():
        raise SweepError(f"--refine adds norms to a finished run, and {out} holds none of this sweep: run it "
                         "first without --refine (same options), then refine it")
    grid = [float(r) for r in recorded["norms"]]
    have = {norm_key(r) for r in grid}
    if not {norm_key(r) for r in config["norms"]} <= have:
        raise SweepError(f"--refine refines the grid recorded in {out}; give the same --norms as that run "
                         "(or auto), or extend it first without --refine")
    curves, kinds = read_points(points, [])
    main = [curves[(t, m)] for (t, m) in curves if m in ("alignment", "helpfulness") and METRICS[m].kind == kinds[t]]
    if not main or any({norm_key(r) for r in c.norms} != have for c in main):
        raise SweepError(f"{out} has not finished its grid: rerun the same command without --refine first")
    values = [[float(c.mean[i]) for i in range(len(grid))] for c in main]
    added = refine_norms(grid, values, k)
    merged = config_for(sorted(grid + added), "refine", recorded.get("auto_grid"))
    merged["configured_norms"] = recorded.get("configured_norms", merged.get("configured_norms"))
    return merged


def prepare_joint_sweep(lm, settings: SweepSettings, vectors: list[SteeringVector], names: list[str],
                        layers: list[int], *, model_name: str, command: str | None, extra: dict | None = None,
                        tasks: list[Task] | None = None) -> tuple[SweepPlan, dict, list[SteeringVector]]:
    """A joint sweep of several vectors over the product of their grids (``settings.joint_norms``,
    one per vector; default ``settings.norms`` for each). With ``settings.orthogonalize`` every
    vector after the first is made orthogonal to the first at each layer. Returns the plan,
    ``config.json`` and the vectors as steered."""
    from itertools import product

    from repe_tradeoff.engine.batching import default_batch_size

    if len(vectors) < 2 or len(names) != len(vectors):
        raise SweepError("a joint sweep needs two or more vectors, each with a name")
    if len(set(names)) != len(names):
        raise SweepError(f"the vectors' names {names} repeat: joint records name each vector's norm, so give "
                         "the files different names (or a `name` in their metadata)")
    specs = list(settings.joint_norms) or [settings.norms] * len(vectors)
    if len(specs) != len(vectors):
        raise SweepError(f"{len(specs)} norm grids for {len(vectors)} vectors: give --norms once (shared) "
                         "or once per --vector, in the same order")
    before = layer_cosines(vectors[0], vectors[1])
    if settings.orthogonalize:
        vectors = [vectors[0], *(orthogonalized(v, vectors[0]) for v in vectors[1:])]
    grids, scales = [], []
    for spec, vector in zip(specs, vectors):
        grid, scale = norm_grid(settings.model_copy(update={"norms": spec}), vector)
        grids.append(grid)
        scales.append(scale)
    plan = SweepPlan(
        norms=[tuple(p) for p in product(*grids)], tasks=tasks or build_tasks(settings), layers=list(layers),
        positions=settings.positions, operator=settings.operator, share_lower=settings.share_lower,
        share_prompts=settings.share_prompts, batch_size=settings.batch_size or default_batch_size(lm.model),
        chunk_size=settings.chunk_size, max_new_tokens=settings.max_new_tokens,
        response_scorer=settings.response_scorer, vector_names=list(names),
    )
    config = run_config(
        plan, vectors, model_name=model_name, model_revision=lm.revision, dtype=settings.dtype,
        extra={"norm_unit": settings.norm_unit, "norm_unit_scales": dict(zip(names, scales)), "command": command,
               "orthogonalize": settings.orthogonalize,
               "cosines": {str(k): round(c, 6) for k, c in layer_cosines(vectors[0], vectors[1]).items()},
               "cosines_before": {str(k): round(c, 6) for k, c in before.items()}, **(extra or {})},
    )
    return plan, config, vectors
