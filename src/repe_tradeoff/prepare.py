"""One way to set up a sweep, for `sweep` and `run` alike: settings → tasks, plan and config.json."""

from __future__ import annotations

from repe_tradeoff.config import HelpfulnessSpec, SweepSettings
from repe_tradeoff.errors import SweepError
from repe_tradeoff.generation import response_scorer
from repe_tradeoff.sweep import SweepPlan, run_config
from repe_tradeoff.tasks import MultipleChoiceTask, Task, alignment_task
from repe_tradeoff.text_tasks import ExactMatchTask, FluencyTask
from repe_tradeoff.vectors import SteeringVector


def norm_grid(settings: SweepSettings, vector: SteeringVector) -> tuple[list[float], float]:
    """The absolute grid, and the factor that turned the configured grid into it."""
    if settings.norm_unit == "absolute":
        return settings.grid(), 1.0
    residual = vector.metadata.get("residual_norms", {})
    values = [residual[str(layer)] for layer in vector.layers if str(layer) in residual]
    scale = sum(values) / len(values) if values else 1.0
    return [round(r * scale, 6) for r in settings.grid()], scale


SHORT_ANSWER = "short-answer"


def text_task(spec: HelpfulnessSpec) -> ExactMatchTask | None:
    """The exact-match task of ``short-answer`` or ``short-answer:FILE.jsonl``; None for other specs."""
    from repe_tradeoff.data import load_short_answer

    name, sep, path = spec.spec.partition(":")
    if name != SHORT_ANSWER or (sep and not path):
        return None
    task = load_short_answer(path or SHORT_ANSWER)
    # an instruction-tuned model answers best in its chat template, unless the spec says otherwise
    template = spec.template if "template" in spec.model_fields_set else "auto"
    return ExactMatchTask(task.name, list(task.questions), template)


def build_tasks(settings: SweepSettings) -> list[Task]:
    """The tasks of the settings' behaviors and helpfulness specs, with their scorers and templates."""
    from repe_tradeoff.data import load_behavior, load_helpfulness, load_neutral_text

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
        generative = text_task(spec)
        if generative is not None:
            tasks.append(generative)
            continue
        task = load_helpfulness(spec.spec)
        tasks.append(MultipleChoiceTask(task.name, list(task.questions), spec.format, spec.template))
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
               "command": command, **(extra or {})},
    )
    return plan, config
