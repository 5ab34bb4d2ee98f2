"""The norm sweep: every task × item × norm, batched across norms, resumable, deterministic.

Writes ``items.jsonl`` chunk by chunk (a chunk is a fixed range of item indices, so a resumed
run batches exactly as an uninterrupted one), then derives ``points.jsonl`` from it. See
docs/run-files.md for the files. What a task measures is the task's business
(:mod:`repe_tradeoff.tasks.choice`); how a chunk is batched is :mod:`repe_tradeoff.engine.batching`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from repe_tradeoff._version import __version__
from repe_tradeoff.engine.batching import BatchBudget, ChunkRunner
from repe_tradeoff.engine.steering import Steering
from repe_tradeoff.errors import SweepError
from repe_tradeoff.runs import RunFileError, norm_key, recorded_config, write_config, write_points
from repe_tradeoff.runs.chunks import ChunkAppender, complete_units, point_key, write_in_plan_order
from repe_tradeoff.runs.processes import deal, process_group, run_lock
from repe_tradeoff.tasks.choice import Task
from repe_tradeoff.vectors.vector import SteeringVector

__all__ = ["SweepError", "SweepPlan", "run_config", "run_sweep"]


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


def _sources(vectors: list[SteeringVector]) -> dict:
    """Where imported vectors came from (format, file hash, mapping, lengths); outside the
    config hash, so a moved or re-exported file with the same numbers still resumes."""
    sources = [v.metadata.get("source") for v in vectors]
    if not any(sources):
        return {}
    return {"vector_source": sources[0]} if len(vectors) == 1 else {"vector_sources": sources}


def _joint_grids(plan: SweepPlan) -> dict[str, list[float]]:
    return {name: sorted({p[i] for p in plan.norms}) for i, name in enumerate(plan.vector_names)}


#: The config.json keys that change results (``config_hash`` covers them and ``limit``).
RESULT_KEYS = ("model", "model_revision", "dtype", "vector", "vectors", "layers", "positions", "operator", "norms", "tasks",
               "chunk_size", "max_new_tokens", "response_scorer", "seed")


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
    results = {  # the keys of RESULT_KEYS
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
        # a joint grid is one step and is not extended, so it keeps no history
        **({} if plan.joint else {"grid_history": [{"source": "grid", "added": plan.norms}]}),
        "versions": {"repe_tradeoff": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        **_sources(vectors),
        **(extra or {}),
        "config_hash": _sha(results),
    }
    return config


def grid_units(config: dict, plan: SweepPlan | None = None) -> list[set]:
    """The norms of each step of the grid's history: the sets a chunk is computed in.

    A chunk's records at one step's norms are written in one append, so they are kept or recomputed
    together (a resumed run batches as an uninterrupted one). A config without a history, or with
    one that does not add up to its grid, is one step.
    """
    if plan is not None and plan.joint:  # a joint grid is one step (it is not extended)
        return [{point_key(p) for p in plan.norms}]
    grid = {norm_key(r) for r in config.get("norms", [])}
    steps = [{norm_key(r) for r in step.get("added", [])} for step in config.get("grid_history") or []]
    if not steps or set().union(*steps) != grid or sum(map(len, steps)) != len(grid):
        return [grid]
    return steps


def item_chunks(task: Task, chunk_size: int, limit: int | None) -> list[list[int]]:
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
    config = {**config, "limit": limit}
    config["config_hash"] = _sha({"base": config["config_hash"], "limit": limit})
    world, rank, barrier = process_group()
    governing, write = _check_config(config, out)
    units = grid_units(governing, plan)
    names = plan.vector_names if plan.joint else []
    unit_of = {r: u for u, unit in enumerate(units) for r in unit}
    plan_chunks = [(t, c, ids) for t in plan.tasks for c, ids in enumerate(item_chunks(t, plan.chunk_size, limit))]
    chunk_ids = {(t.name, c): ids for t, c, ids in plan_chunks}
    items_path = out / "items.jsonl"
    with run_lock(out) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            if write:
                write_config(out, governing)
            done = complete_units(items_path, chunk_ids, units, names)
            write_in_plan_order(items_path, done, chunk_ids, plan.norms)  # drop torn chunks and steps
        barrier()
        done = complete_units(items_path, chunk_ids, units, names)
        pending = []  # each chunk at the norms of the grid steps it lacks (a new grid step: only its norms)
        for task, chunk, ids in plan_chunks:
            have = done.get((task.name, chunk), {})
            norms = [r for r in plan.norms if unit_of[point_key(r)] not in have]
            if norms:
                pending.append((task, chunk, ids, norms))
        mine = deal(pending, rank, world)
        if progress:
            progress.start(sum(len(ids) * len(norms) for _, _, ids, norms in mine), 0)
        vectors = _as_vectors(vector)
        steering = Steering(vectors[0] if len(vectors) == 1 else tuple(vectors), tuple(plan.layers), plan.positions,
                            plan.operator, plan.share_lower, plan.share_prompts)
        budget = BatchBudget(plan.batch_size)
        with ChunkAppender(items_path) as append:
            for task, chunk, ids, norms in mine:
                runner = ChunkRunner(model, tokenizer, replace(plan, norms=norms), steering, budget)
                records = [_labelled(rec, plan) for rec in task.score_items(runner, ids)]
                append(records, chunk)
                if progress:
                    progress.advance(len(records))
        barrier()
        if rank == 0:
            done = complete_units(items_path, chunk_ids, units, names)
            missing = [key for key in chunk_ids if len(done.get(key, {})) != len(units)]
            if missing:
                raise SweepError(f"{len(missing)} chunk(s) are missing after the sweep (first: {missing[0]}); rerun to finish")
            write_in_plan_order(items_path, done, chunk_ids, plan.norms)
            write_points(out)
        barrier()
    return out


def same_settings(old: dict, new: dict) -> bool:
    """Whether two config.json files describe the same sweep up to its grid of norms."""
    keys = [k for k in RESULT_KEYS if k != "norms"] + ["limit"]
    return all(json.dumps(old.get(k), sort_keys=True) == json.dumps(new.get(k), sort_keys=True) for k in keys)


def extended_config(old: dict, new: dict) -> dict:
    """``new`` (a grid that contains ``old``'s) with the grid's history: old's steps, then the norms added."""
    history = old.get("grid_history") or [{"source": "grid", "added": old.get("norms", [])}]
    recorded = {norm_key(r) for r in old.get("norms", [])}
    source = (new.get("grid_history") or [{}])[-1].get("source", "grid")
    added = [r for r in new["norms"] if norm_key(r) not in recorded]
    merged = {**new, "grid_history": [*history, {"source": source, "added": added}]}
    for key in ("auto_grid", "sequential"):  # how the recorded norms were chosen stays on record
        if key not in new and key in old:
            merged[key] = old[key]
    return merged


def _check_config(config: dict, out: Path) -> tuple[dict, bool]:
    """The configuration that governs the folder and whether to write it: the recorded one to resume,
    ``config`` to start, or ``config`` with the grid's history when it extends the recorded grid.
    Refuse to mix two configurations in one run folder."""
    try:
        old = recorded_config(out)
    except RunFileError:
        raise SweepError(
            f"{out / 'config.json'} is not a readable run configuration, so the sweep in {out} cannot be "
            f"resumed. Use another --out folder, or delete {out} to start over."
        ) from None
    if old is None:
        return config, True
    if old.get("config_hash") == config["config_hash"]:
        return old, False
    recorded = {norm_key(r) for r in old.get("norms") or []}
    wanted = {norm_key(r) for r in config.get("norms") or []}
    if same_settings(old, config) and recorded and recorded <= wanted:
        return extended_config(old, config), True
    changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k)
                     and k in (*RESULT_KEYS, "limit"))
    hint = ""
    if changed == ["norms"]:
        lost = sorted(recorded - wanted)
        hint = (f" A grid can only grow: the recorded norms {', '.join(f'{r:g}' for r in lost[:5])}"
                f"{' …' if len(lost) > 5 else ''} are missing from the new one.")
    raise SweepError(
        f"{out} holds a sweep with a different configuration (differs in: "
        f"{', '.join(changed) or 'hash'}).{hint} Use another --out folder, or delete {out} to start over."
    )
