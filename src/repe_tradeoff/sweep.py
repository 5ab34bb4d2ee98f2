"""The norm sweep: every task × item × norm, batched across norms, resumable, deterministic.

Writes ``items.jsonl`` chunk by chunk (a chunk is a fixed range of item indices, so a resumed
run batches exactly as an uninterrupted one), then derives ``points.jsonl`` from it. See
docs/run-files.md for the files. What a task measures is the task's business
(:mod:`repe_tradeoff.tasks`); how a chunk is batched is :mod:`repe_tradeoff.batching`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repe_tradeoff import __version__
from repe_tradeoff.batching import BatchBudget, ChunkRunner
from repe_tradeoff.errors import SweepError
from repe_tradeoff.processes import deal, process_group, run_lock
from repe_tradeoff.runfiles import aggregate, atomic_write, write_config, write_points
from repe_tradeoff.scoring import Steering
from repe_tradeoff.tasks import Task
from repe_tradeoff.vectors import SteeringVector

__all__ = ["SweepError", "SweepPlan", "aggregate", "atomic_write", "run_config", "run_sweep", "write_points"]


@dataclass
class SweepPlan:
    """What to sweep. ``batch_size`` is the number of rows (sequence × norm) per forward pass.

    A joint sweep of several vectors names them in ``vector_names``; its ``norms`` are then
    tuples (one norm per vector, the product of the vectors' grids) and its records carry
    ``norms: {name: r}`` instead of ``norm``."""

    norms: list
    tasks: list[Task]
    layers: list[int]
    positions: str = "all"
    operator: str = "add"
    share_lower: bool = True
    share_prompts: bool = True
    batch_size: int = 256
    chunk_size: int = 16
    max_new_tokens: int = 40
    response_scorer: str = "refusal"
    seed: int = 0
    vector_names: list[str] = field(default_factory=list)

    @property
    def joint(self) -> bool:
        return len(self.vector_names) > 1


def _as_vectors(vector) -> list[SteeringVector]:
    return [vector] if isinstance(vector, SteeringVector) else list(vector)


def _vector_info(vector: SteeringVector) -> dict:
    return {"sha256": vector.sha256(), "layers": vector.layers, "method": vector.metadata.get("method")}


def _joint_grids(plan: SweepPlan) -> dict[str, list[float]]:
    return {name: sorted({p[i] for p in plan.norms}) for i, name in enumerate(plan.vector_names)}


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def run_config(plan: SweepPlan, vector: SteeringVector | Sequence[SteeringVector], *, model_name: str,
               model_revision, dtype: str, extra=None) -> dict:
    """The ``config.json`` of a sweep; ``config_hash`` covers everything that changes results.

    A joint sweep (several vectors) records ``vectors`` (each with its name and grid) instead
    of ``vector`` and ``norms``."""
    import torch
    import transformers

    tasks = [t.describe() for t in plan.tasks]
    vectors = _as_vectors(vector)
    residual = vectors[0].metadata.get("residual_norms", {})
    if plan.joint:
        grids = _joint_grids(plan)
        steered = {"vectors": [{"name": name, **_vector_info(v), "behavior": v.metadata.get("dataset"),
                                "norms": grids[name]}
                               for name, v in zip(plan.vector_names, vectors)]}
    else:
        steered = {"vector": _vector_info(vectors[0]), "norms": plan.norms}
    results = {
        "model": model_name,
        "model_revision": model_revision,
        "dtype": dtype,
        **steered,
        "layers": plan.layers,
        "positions": plan.positions,
        "operator": plan.operator,
        "tasks": tasks,
        "chunk_size": plan.chunk_size,
        "max_new_tokens": plan.max_new_tokens,
        "response_scorer": plan.response_scorer,
        "seed": plan.seed,
    }
    config = {
        "format_version": 1,
        **results,
        "norm_scale": {
            "residual_norm": {str(layer): residual[str(layer)] for layer in plan.layers if str(layer) in residual},
            "relative_per_unit_r": {
                str(layer): 1.0 / residual[str(layer)] for layer in plan.layers if residual.get(str(layer))
            },
            "total_per_unit_r": math.sqrt(len(plan.layers)),
        },
        "share_lower": plan.share_lower,
        "share_prompts": plan.share_prompts,
        "batch_size": plan.batch_size,
        "versions": {"repe_tradeoff": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        **(extra or {}),
        "config_hash": _sha(results),
    }
    return config


def _complete_chunks(path: Path, expected: dict[tuple[str, int], int]) -> dict[tuple[str, int], bytes]:
    """The whole chunks found in ``items.jsonl``, each as the bytes of its lines.

    Chunks may stand in any order (several processes append to one file). A torn line, or a
    chunk cut short by a crash, is left out and computed again on resume.
    """
    if not path.exists():
        return {}
    groups: dict[tuple[str, int], list[bytes]] = {}
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            rec = json.loads(line)
            key = (rec["task"], int(rec["chunk"]))
        except (ValueError, KeyError, TypeError):
            continue
        if line.endswith(b"\n") and key in expected:
            groups.setdefault(key, []).append(line)
    return {key: b"".join(lines) for key, lines in groups.items() if len(lines) == expected[key]}


def _write_in_plan_order(path: Path, chunks: dict[tuple[str, int], bytes], order: list[tuple[str, int]]) -> None:
    data = b"".join(chunks[key] for key in order if key in chunks)
    if not path.exists() or path.read_bytes() != data:
        atomic_write(path, data.decode("utf-8"))


def _chunks(task: Task, chunk_size: int, limit: int | None) -> list[list[int]]:
    n = min(task.n_items, limit) if limit else task.n_items
    return [list(range(s, min(s + chunk_size, n))) for s in range(0, n, chunk_size)]


def _labelled(record: dict, plan: SweepPlan) -> dict:
    """A joint sweep's record: the grid point's tuple becomes ``norms: {vector name: r}``."""
    if not plan.joint:
        return record
    point = record.pop("norm")
    return {**record, "norms": dict(zip(plan.vector_names, point))}


def run_sweep(
    model,
    tokenizer,
    vector: SteeringVector | Sequence[SteeringVector],
    plan: SweepPlan,
    out: str | Path,
    *,
    config: dict,
    limit: int | None = None,
    progress=None,
) -> Path:
    """Run (or resume) a sweep into ``out`` and return the folder; several vectors (named in
    ``plan.vector_names``) steer jointly over the product grid ``plan.norms``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out} is a file, not a run folder; give --out a folder path (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepError(
            f"cannot use {out} as the run folder ({err.strerror or err}); give --out a folder you can write to"
        ) from None
    cfg_path = out / "config.json"
    config = {**config, "limit": limit}
    config["config_hash"] = _sha({"base": config["config_hash"], "limit": limit})
    world, rank, barrier = process_group()
    _check_config(cfg_path, config, out)
    plan_chunks = [(t, c, ids) for t in plan.tasks for c, ids in enumerate(_chunks(t, plan.chunk_size, limit))]
    expected = {(t.name, c): len(ids) * len(plan.norms) for t, c, ids in plan_chunks}
    order = [(t.name, c) for t, c, _ in plan_chunks]
    items_path = out / "items.jsonl"
    with run_lock(out) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            if not cfg_path.exists():
                write_config(out, config)
            _write_in_plan_order(items_path, _complete_chunks(items_path, expected), order)  # drop torn chunks
        barrier()
        done = set(_complete_chunks(items_path, expected))
        pending = [entry for entry in plan_chunks if (entry[0].name, entry[1]) not in done]
        mine = deal(pending, rank, world)
        if progress:
            progress.start(sum(len(ids) for _, _, ids in mine) * len(plan.norms), 0)
        vectors = _as_vectors(vector)
        steering = Steering(vectors[0] if len(vectors) == 1 else tuple(vectors), tuple(plan.layers), plan.positions, plan.operator, plan.share_lower,
                            plan.share_prompts)
        runner = ChunkRunner(model, tokenizer, plan, steering, BatchBudget(plan.batch_size))
        with open(items_path, "ab") as f:
            for task, chunk, ids in mine:
                records = [_labelled(rec, plan) for rec in task.score_items(runner, ids)]
                text = "".join(json.dumps({**rec, "chunk": chunk}, sort_keys=True) + "\n" for rec in records)
                f.write(text.encode())  # one chunk, one append (O_APPEND: processes never interleave)
                f.flush()
                os.fsync(f.fileno())
                if progress:
                    progress.advance(len(records))
        barrier()
        if rank == 0:
            chunks = _complete_chunks(items_path, expected)
            missing = [key for key in order if key not in chunks]
            if missing:
                raise SweepError(f"{len(missing)} chunk(s) are missing after the sweep (first: {missing[0]}); rerun to finish")
            _write_in_plan_order(items_path, chunks, order)
            write_points(out)
        barrier()
    return out


def _check_config(cfg_path: Path, config: dict, out: Path) -> None:
    """Refuse to mix two configurations in one run folder."""
    if not cfg_path.exists():
        return
    try:
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError:
        old = None
    if not isinstance(old, dict):
        raise SweepError(
            f"{cfg_path} is not a readable run configuration, so the sweep in {out} cannot be "
            f"resumed. Use another --out folder, or delete {out} to start over."
        )
    if old.get("config_hash") != config["config_hash"]:
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k)
                         and k not in ("versions", "config_hash"))
        raise SweepError(
            f"{out} holds a sweep with a different configuration (differs in: "
            f"{', '.join(changed) or 'hash'}). Use another --out folder, or delete {out} to start over."
        )
