"""One way to set up a sweep, for `sweep` and `run` alike: settings → tasks, plan and config.json."""

from __future__ import annotations

from repe_tradeoff.config import SweepSettings
from repe_tradeoff.errors import SweepError
from repe_tradeoff.generation import response_scorer
from repe_tradeoff.sweep import SweepPlan, run_config
from repe_tradeoff.tasks import MultipleChoiceTask, Task, alignment_task
from repe_tradeoff.vectors import SteeringVector, layer_cosines, orthogonalized


def norm_grid(settings: SweepSettings, vector: SteeringVector) -> tuple[list[float], float]:
    """The absolute grid, and the factor that turned the configured grid into it."""
    if settings.norm_unit == "absolute":
        return settings.grid(), 1.0
    residual = vector.metadata.get("residual_norms", {})
    values = [residual[str(layer)] for layer in vector.layers if str(layer) in residual]
    scale = sum(values) / len(values) if values else 1.0
    return [round(r * scale, 6) for r in settings.grid()], scale


def build_tasks(settings: SweepSettings) -> list[Task]:
    """The tasks of the settings' behaviors and helpfulness specs, with their scorers and templates."""
    from repe_tradeoff.data import load_behavior, load_helpfulness

    tasks: list[Task] = []
    for spec in settings.behaviors:
        behavior = load_behavior(spec.name)
        if not behavior.items:
            raise SweepError(
                f"behavior {spec.name!r} has no evaluation items to score; give one with items "
                "(prompt, aligned, misaligned), or measure it only through --helpfulness"
            )
        tasks.append(alignment_task(behavior.name, list(behavior.items), spec.scorer, spec.template))
    for spec in settings.helpfulness:
        if spec.lm_eval is not None:
            from repe_tradeoff.lm_eval_task import lm_eval_task

            tasks.append(lm_eval_task(spec.lm_eval, spec.include, spec.num_fewshot))
            continue
        task = load_helpfulness(spec.spec)
        tasks.append(MultipleChoiceTask(task.name, list(task.questions), spec.format, spec.template))
    if not tasks:
        raise SweepError("nothing to measure: give --alignment BEHAVIOR and/or --helpfulness TASK")
    if any(getattr(t, "scorer", None) == "generate" for t in tasks):
        response_scorer(settings.response_scorer)  # a scorer that cannot be loaded fails before the sweep starts
    return tasks


def prepare_sweep(lm, settings: SweepSettings, vector: SteeringVector, layers: list[int], *, model_name: str,
                  command: str | None, extra: dict | None = None,
                  tasks: list[Task] | None = None) -> tuple[SweepPlan, dict]:
    """The plan and ``config.json`` of a sweep of ``lm`` steered by ``vector`` at ``layers``.

    ``command`` is the command line that ran (recorded as it is); ``extra`` adds keys to
    config.json that do not change results (the experiment's name, the vector's path); ``tasks``
    are those :func:`build_tasks` made of ``settings``, when built already.
    """
    from repe_tradeoff.batching import default_batch_size

    norms, scale = norm_grid(settings, vector)
    plan = SweepPlan(
        norms=norms, tasks=tasks or build_tasks(settings), layers=list(layers), positions=settings.positions,
        operator=settings.operator, share_lower=settings.share_lower, share_prompts=settings.share_prompts,
        batch_size=settings.batch_size or default_batch_size(lm.model), chunk_size=settings.chunk_size,
        max_new_tokens=settings.max_new_tokens, response_scorer=settings.response_scorer,
    )
    config = run_config(
        plan, vector, model_name=model_name, model_revision=lm.revision, dtype=settings.dtype,
        extra={"norm_unit": settings.norm_unit, "norm_unit_scale": scale, "configured_norms": settings.grid(),
               "command": command, "steered_behavior": vector.metadata.get("dataset"), **(extra or {})},
    )
    return plan, config


def prepare_joint_sweep(lm, settings: SweepSettings, vectors: list[SteeringVector], names: list[str],
                        layers: list[int], *, model_name: str, command: str | None, extra: dict | None = None,
                        tasks: list[Task] | None = None) -> tuple[SweepPlan, dict, list[SteeringVector]]:
    """A joint sweep of several vectors over the product of their grids (``settings.joint_norms``,
    one per vector; default ``settings.norms`` for each). With ``settings.orthogonalize`` every
    vector after the first is made orthogonal to the first at each layer. Returns the plan,
    ``config.json`` and the vectors as steered."""
    from itertools import product

    from repe_tradeoff.batching import default_batch_size

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
