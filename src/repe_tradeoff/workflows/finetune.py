"""Fine-tuning on the same axes as steering: a LoRA trained on a behavior's pairs, checkpointed,
each checkpoint scored with the sweep's own tasks and its representation shift measured.

A fine-tuning run folder ``F`` holds::

    config.json                 what ran (``kind: finetune``; the LoRA settings under ``finetune``)
    vector.safetensors          the steering vector read from the same pairs (for shift_along)
    checkpoints/step-N/         the adapter in peft's format (adapter_config.json,
                                adapter_model.safetensors), the optimizer state, run/ (a sweep
                                folder at r = 0 scored through the adapter) and shift.json
    shift.jsonl                 one line per checkpoint: step, shift metrics, per-prompt ‖U·δ‖
    items.jsonl, points.jsonl   every checkpoint's items with ``norm`` = its shift_norm and ``step``

Resuming: a checkpoint whose files are complete is never retrained, a scored one never rescored;
training continues from the last saved checkpoint with its optimizer state.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from repe_tradeoff import __version__
from repe_tradeoff.engine.lora import (
    FinetuneError,
    LoraSettings,
    Trainer,
    attach_lora,
    checkpoint_steps,
    encode_pairs,
    is_saved,
    load_adapter_weights,
    reference_logps,
)
from repe_tradeoff.engine.shift import per_prompt_logit_shift, read_states, shift_metrics
from repe_tradeoff.runs import atomic_write, norm_key, read_jsonl, write_jsonl, write_points
from repe_tradeoff.tasks.choice import AlignmentTask, Task

SHIFT_FILE = "shift.json"


def step_folder(out: Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step-{step}"


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def shift_prompts(tasks: list[Task], tokenizer, limit: int | None) -> list[list[int]]:
    """The alignment task's evaluation prompts, tokenised exactly as the task scores them."""
    task = next((t for t in tasks if isinstance(t, AlignmentTask)), None)
    if task is None:
        raise FinetuneError("fine-tuning measures its shift on the alignment task's prompts: give --alignment "
                            "BEHAVIOR with the forced-choice or yes-no scorer")
    seqs = task.sequences_for(tokenizer)
    first: dict[int, list[int]] = {}
    for prompt, owner in zip(seqs.prompts, seqs.owners):
        first.setdefault(owner, prompt)
    n = min(task.n_items, limit) if limit else task.n_items
    return [first[i] for i in range(n)]


def finetune_config(sweep_config: dict, lora: LoraSettings, steps: list[int], behavior: str,
                    command: str | None) -> dict:
    """``config.json`` of a fine-tuning run; ``config_hash`` covers what changes its results."""
    import torch
    import transformers

    keys = ("model", "model_revision", "dtype", "vector", "layers", "tasks", "chunk_size", "limit")
    results = {**{k: sweep_config.get(k) for k in keys}, "behavior": behavior, "finetune": lora.describe(),
               "checkpoint_steps": steps}
    from importlib.metadata import PackageNotFoundError, version

    try:
        peft_version = version("peft")
    except PackageNotFoundError:
        raise FinetuneError("fine-tuning needs peft: pip install 'repe-tradeoff[finetune]'") from None
    return {"format_version": 1, "kind": "finetune", **results, "abscissa": "shift_norm",
            "norm_scale": sweep_config.get("norm_scale"), "command": command,
            "versions": {"repe_tradeoff": __version__, "torch": torch.__version__, "peft": peft_version,
                         "transformers": transformers.__version__, "python": platform.python_version()},
            "config_hash": _sha(results)}


def _check_folder(out: Path, config: dict) -> None:
    path = out / "config.json"
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"{out} is a file, not a run folder; give --out a folder path")
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(config, indent=2, sort_keys=True))
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        old = None
    if not isinstance(old, dict) or old.get("kind") != "finetune":
        raise FinetuneError(f"{out} holds something other than a fine-tuning run; give another --out folder")
    if old.get("config_hash") != config["config_hash"]:
        changed = [k for k in ("model", "layers", "tasks", "finetune", "checkpoint_steps", "limit", "behavior")
                   if json.dumps(old.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True)]
        raise FinetuneError(f"{out} holds a fine-tuning run with other settings ({', '.join(changed) or 'versions'} "
                            "differ): rerun with the same options to resume it, or give another --out folder")


def run_finetune(lm, tasks: list[Task], vector, sweep_plan, sweep_config: dict, pairs: list[tuple[str, str]],
                 lora: LoraSettings, out: str | Path, *, behavior: str, limit: int | None = None,
                 command: str | None = None, progress=None,
                 on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) the LoRA into ``out``, scoring and measuring each checkpoint.

    ``vector`` is the steering vector read from ``pairs`` at the sweep's layers; ``sweep_plan`` and
    ``sweep_config`` are those of a sweep of ``tasks`` at r = 0 (:func:`repe_tradeoff.workflows.prepare.prepare_sweep`).
    Returns what this call did: ``{"trained_steps": n, "scored": [steps]}``."""
    out = Path(out)
    steps = checkpoint_steps(lora.steps, lora.checkpoints)
    config = finetune_config(sweep_config, lora, steps, behavior, command)
    _check_folder(out, config)
    vector.save(out / "vector.safetensors")
    model, tokenizer, layers = lm.model, lm.tokenizer, list(sweep_plan.layers)
    prompts = shift_prompts(tasks, tokenizer, limit)
    base = read_states(model, prompts, layers)  # before the adapter exists: the base model's states
    encoded = encode_pairs(tokenizer, pairs)
    reference_logps(model, encoded)
    peft_model = attach_lora(model, layers, lora)  # from here on `model` runs through the adapter
    peft_model.eval()
    try:
        done = _train_and_score(peft_model, model, tokenizer, vector, sweep_plan, sweep_config, encoded, lora, out,
                                steps, prompts, base, limit, progress, on_checkpoint)
    finally:
        peft_model.unload()  # the caller's model is left as it was given: no adapter layers
    collect(out)
    return done


def _train_and_score(peft_model, model, tokenizer, vector, sweep_plan, sweep_config: dict, encoded, lora: LoraSettings,
                     out: Path, steps: list[int], prompts, base, limit, progress, on_checkpoint) -> dict:
    from repe_tradeoff.workflows.sweep import run_sweep

    layers = list(sweep_plan.layers)
    trainer = Trainer(peft_model, encoded, lora)
    folders = {s: step_folder(out, s) for s in steps}
    saved = [s for s in steps if is_saved(folders[s])]
    # keep only a saved prefix: a checkpoint after a gap cannot be continued from, so it is retrained
    prefix = [s for s in steps if s in saved and all(t in saved for t in steps if t < s)]
    last_saved = prefix[-1] if prefix else None

    def scored(step: int) -> bool:
        return (folders[step] / SHIFT_FILE).is_file() and (folders[step] / "run" / "points.jsonl").is_file()

    todo_train = lora.steps - (last_saved or 0) if last_saved is not None else lora.steps
    if progress:
        progress.start(lora.steps + len(steps), (lora.steps - todo_train) + sum(scored(s) for s in steps))
    done: dict = {"trained_steps": 0, "scored": []}

    def score(step: int, train_seconds: float) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        folder = folders[step]
        cfg = {**sweep_config, "checkpoint_step": step, "adapter": str(folder)}
        run_sweep(model, tokenizer, vector, replace(sweep_plan, norms=[0.0]), folder / "run", config=cfg, limit=limit)
        tuned = read_states(model, prompts, layers)
        record = {"step": step, **shift_metrics(base, tuned, vector),
                  "logit_shift_items": per_prompt_logit_shift(base, tuned),
                  "train_seconds": round(train_seconds, 3),
                  "score_seconds": round(time.perf_counter() - t0, 3),
                  "score_cpu_seconds": round(time.process_time() - c0, 3)}
        atomic_write(folder / SHIFT_FILE, json.dumps(record, sort_keys=True))
        done["scored"].append(step)
        if progress:
            progress.advance(1)

    for s in prefix:  # saved earlier; scored now if an interruption came between saving and scoring
        if not scored(s):
            load_adapter_weights(peft_model, folders[s])
            score(s, 0.0)
    if last_saved is not None:
        trainer.restore(folders[last_saved])
    for s in steps:
        if last_saved is not None and s <= last_saved:
            if on_checkpoint:
                on_checkpoint(s)
            continue
        t0 = time.perf_counter()
        while trainer.step < s:
            trainer.train_step()
            done["trained_steps"] += 1
            if progress:
                progress.advance(1)
        trainer.save(folders[s], {"objective": lora.objective})
        score(s, time.perf_counter() - t0)
        if on_checkpoint:
            on_checkpoint(s)
    return done


def collect(out: Path) -> None:
    """``shift.jsonl``, ``items.jsonl`` and ``points.jsonl`` of the run from its checkpoints' files."""
    out = Path(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    shifts, items = [], []
    for step in config["checkpoint_steps"]:
        folder = step_folder(out, step)
        shift = json.loads((folder / SHIFT_FILE).read_text(encoding="utf-8"))
        shifts.append(shift)
        abscissa = norm_key(shift["shift_norm"])
        for rec in read_jsonl(folder / "run" / "items.jsonl"):
            rec = {k: v for k, v in rec.items() if k not in ("chunk", "logit_shift")}  # r = 0 within the checkpoint
            items.append({**rec, "norm": abscissa, "step": step})
    write_jsonl(out / "shift.jsonl", shifts)
    write_jsonl(out / "items.jsonl", items)
    write_points(out)
    config["norms"] = [norm_key(s["shift_norm"]) for s in shifts]
    atomic_write(out / "config.json", json.dumps(config, indent=2, sort_keys=True))
