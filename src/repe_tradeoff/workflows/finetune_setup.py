"""Wiring of a fine-tuning run: the tasks, the vector read from the pairs, the r = 0 sweep plan."""

from __future__ import annotations

from pathlib import Path

from repe_tradeoff.engine.lora import FinetuneError, LoraSettings
from repe_tradeoff.workflows.settings import SweepSettings


def finetune_model(lm, settings: SweepSettings, behavior: str, layer_spec: str | None, lora: LoraSettings,
                   out: str | Path, *, model_name: str, command: str | None = None, progress=None,
                   on_checkpoint=None, vector_path: Path | None = None) -> dict:
    """Fine-tune ``lm`` on ``behavior``'s pairs into ``out`` and score every checkpoint on the tasks of
    ``settings`` (their grid is ignored: each checkpoint is scored unsteered). ``layer_spec``: the
    layers LoRA adapts and the shift is measured at (default: ``vector_path``'s layers, else
    ``middle``). ``vector_path``: a vector already read from the same pairs (e.g. the steering
    run's), instead of reading one."""
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.vectors.reading import dataset_hash, extract
    from repe_tradeoff.vectors.vector import SteeringVector
    from repe_tradeoff.workflows.finetune import run_finetune
    from repe_tradeoff.workflows.prepare import build_tasks, prepare_sweep

    data = load_behavior(behavior)
    if len(data.pairs) < 2:
        raise FinetuneError(f"behavior {behavior!r} has {len(data.pairs)} contrastive pair(s); fine-tuning trains "
                            "on the pairs, so give a behavior with pairs (20 or more)")
    if not any(b.name == behavior for b in settings.behaviors):
        raise FinetuneError(f"the alignment task must be the trained behavior: give --alignment {behavior}")
    settings = settings.model_copy(update={"norms": [0.0], "norm_unit": "absolute"})
    tasks = build_tasks(settings)
    pairs = [(p.aligned, p.misaligned) for p in data.pairs]
    saved = Path(out) / "vector.safetensors"
    given = SteeringVector.load(vector_path) if vector_path is not None else None
    if given is not None:
        given.check_model(lm.model, str(vector_path))
        if given.metadata.get("dataset_sha256") not in (None, dataset_hash(pairs)):
            raise FinetuneError(f"{vector_path} was read from other pairs than {behavior!r}'s: shift_along needs "
                                "the vector of the trained pairs; extract one from them, or leave out --vector")
    layers = parse_layers(layer_spec, n_layers(lm.model)) if layer_spec else (
        given.layers if given is not None else parse_layers("middle", n_layers(lm.model)))
    if given is not None:
        vector = given.select(layers)
    elif saved.is_file():  # the same pairs and layers read the same vector; keep the recorded one
        vector = SteeringVector.load(saved)
    else:
        vector, _ = extract(lm.model, lm.tokenizer, pairs, layers, method="pca",
                            metadata={"model": model_name, "model_revision": lm.revision, "dataset": data.name})
    if vector.layers != layers:
        raise FinetuneError(f"{saved} was read at layers {vector.layers}, not {layers}: use the same --layers "
                            "to resume, or another --out folder")
    plan, config = prepare_sweep(lm, settings, vector, layers, model_name=model_name, command=command, tasks=tasks)
    return run_finetune(lm, tasks, vector, plan, config, pairs, lora, out, behavior=data.name, limit=settings.limit,
                        command=command, progress=progress, on_checkpoint=on_checkpoint)


def finetune_experiment(lm, cfg, exp, folder: Path, progress=None, command: str | None = None) -> Path:
    """A run config's ``finetune:``: a LoRA on the experiment's behavior at its layers, with the
    experiment's own vector, into ``folder/finetune``, reported against the experiment's sweep."""
    from repe_tradeoff.reporting.finetune import build_finetune_report

    spec = cfg.finetune
    lora = LoraSettings(steps=spec.steps, checkpoints=spec.checkpoints, rank=spec.rank, alpha=spec.alpha,
                        target_modules=tuple(spec.target_modules), learning_rate=spec.learning_rate, beta=spec.beta,
                        batch_pairs=spec.batch_pairs, seed=spec.seed)
    behavior_spec = next(b for b in cfg.behaviors if b.name == exp.behavior)
    settings = SweepSettings(**{k: getattr(cfg, k) for k in SweepSettings.model_fields if k != "behaviors"},
                             behaviors=[behavior_spec])
    out = folder / "finetune"
    finetune_model(lm, settings, exp.behavior, None, lora, out, model_name=exp.model, command=command,
                   progress=progress, vector_path=folder / "vector.safetensors")
    return build_finetune_report(out, against=folder, n_boot=cfg.fit.n_boot, strict=False)
