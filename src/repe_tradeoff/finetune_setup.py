"""Wiring of a fine-tuning run: the tasks, the vector read from the pairs, the r = 0 sweep plan."""

from __future__ import annotations

from pathlib import Path

from repe_tradeoff.config import SweepSettings
from repe_tradeoff.finetune_train import FinetuneError, LoraSettings


def finetune_model(lm, settings: SweepSettings, behavior: str, layer_spec: str | None, lora: LoraSettings,
                   out: str | Path, *, model_name: str, command: str | None = None, progress=None,
                   on_checkpoint=None) -> dict:
    """Fine-tune ``lm`` on ``behavior``'s pairs into ``out`` and score every checkpoint on the tasks of
    ``settings`` (their grid is ignored: each checkpoint is scored unsteered). ``layer_spec``: the
    layers LoRA adapts and the shift is measured at (default ``middle``)."""
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.finetune import run_finetune
    from repe_tradeoff.models import n_layers, parse_layers
    from repe_tradeoff.prepare import build_tasks, prepare_sweep
    from repe_tradeoff.reading import extract
    from repe_tradeoff.vectors import SteeringVector

    data = load_behavior(behavior)
    if len(data.pairs) < 2:
        raise FinetuneError(f"behavior {behavior!r} has {len(data.pairs)} contrastive pair(s); fine-tuning trains "
                            "on the pairs, so give a behavior with pairs (20 or more)")
    if not any(b.name == behavior for b in settings.behaviors):
        raise FinetuneError(f"the alignment task must be the trained behavior: give --alignment {behavior}")
    settings = settings.model_copy(update={"norms": [0.0], "norm_unit": "absolute"})
    tasks = build_tasks(settings)
    layers = parse_layers(layer_spec or "middle", n_layers(lm.model))
    pairs = [(p.aligned, p.misaligned) for p in data.pairs]
    saved = Path(out) / "vector.safetensors"
    if saved.is_file():  # the same pairs and layers read the same vector; keep the recorded one
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
