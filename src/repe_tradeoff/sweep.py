"""The norm sweep: every task × item × norm, batched across norms, resumable, deterministic.

Writes ``items.jsonl`` chunk by chunk (a chunk is a fixed range of item indices, so a resumed
run batches exactly as an uninterrupted one), then derives ``points.jsonl`` from it. See
docs/run-files.md for the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repe_tradeoff import __version__
from repe_tradeoff.metrics import AlignmentMetric, HelpfulnessMetric, generate, response_scorer
from repe_tradeoff.models import model_device
from repe_tradeoff.scoring import Steering, score
from repe_tradeoff.vectors import SteeringVector

log = logging.getLogger(__name__)

HELPFULNESS_METRICS = ("helpfulness", "helpfulness_norm", "helpfulness_vocab", "accuracy", "logit_shift")


class SweepError(ValueError):
    """A sweep that cannot start or resume; the message says what to do."""


def parse_norms(spec: str | Sequence[float]) -> list[float]:
    """``-8:8:0.5`` (start:stop:step, stop included), ``-2,0,2``, or a list → sorted unique norms."""
    if isinstance(spec, str):
        spec = spec.strip()
        if not spec:
            raise ValueError("empty norm grid: use e.g. `-8:8:0.5` or `-2,0,2`")
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 3:
                raise ValueError(f"norm grid {spec!r}: use start:stop:step, e.g. `-8:8:0.5`")
            try:
                start, stop, step = (float(p) for p in parts)
            except ValueError:
                raise ValueError(
                    f"norm grid {spec!r} has a part that is not a number: use e.g. `-8:8:0.5` or `-2,0,2`"
                ) from None
            if step <= 0 or not all(map(math.isfinite, (start, stop, step))):
                raise ValueError(f"norm grid {spec!r}: the step must be a positive finite number")
            if stop < start:
                raise ValueError(
                    f"norm grid {spec!r}: stop is below start; write start:stop:step with start ≤ stop, "
                    f"e.g. `{parts[1]}:{parts[0]}:{parts[2]}`"
                )
            span = (stop - start) / step  # inf when the range overflows a float
            if span >= 100_000:
                raise ValueError(f"norm grid {spec!r} has over 100000 norms; use a coarser step")
            count = int(math.floor(span + 1e-9)) + 1
            values = [start + i * step for i in range(count)]
        else:
            try:
                values = [float(p) for p in spec.split(",") if p.strip()]
            except ValueError:
                raise ValueError(
                    f"norm grid {spec!r} has a part that is not a number: use e.g. `-8:8:0.5` or `-2,0,2`"
                ) from None
    else:
        values = [float(v) for v in spec]
    if not values:
        raise ValueError("empty norm grid: use e.g. `-8:8:0.5` or `-2,0,2`")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"norm grid {spec!r}: norms must be finite numbers (no inf or nan)")
    # round away float noise from start + i*step so that 0.1*3 is 0.3 in every file
    return sorted({round(v, 10) + 0.0 for v in values})


@dataclass
class SweepPlan:
    """What to sweep. ``batch_size`` is the number of rows (sequence × norm) per forward pass."""

    norms: list[float]
    tasks: list[AlignmentMetric | HelpfulnessMetric]
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


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _task_hash(task) -> str:
    items = task.items if task.kind == "alignment" else task.questions
    return _sha([i.model_dump() if hasattr(i, "model_dump") else vars(i) for i in items])


def run_config(plan: SweepPlan, vector: SteeringVector, *, model_name: str, model_revision, dtype: str, extra=None) -> dict:
    """The ``config.json`` of a sweep; ``config_hash`` covers everything that changes results."""
    import torch
    import transformers

    tasks = []
    for t in plan.tasks:
        entry = {"name": t.name, "kind": t.kind, "n_items": len(t.items if t.kind == "alignment" else t.questions)}
        if t.kind == "alignment":
            entry["scorer"] = t.scorer
            entry["template"] = t.template
        else:
            entry.update(format=t.format, n_choices=t.n_choices, template=t.template)
        entry["sha256"] = _task_hash(t)
        tasks.append(entry)
    residual = vector.metadata.get("residual_norms", {})
    results = {
        "model": model_name,
        "model_revision": model_revision,
        "dtype": dtype,
        "vector": {"sha256": vector.sha256(), "layers": vector.layers, "method": vector.metadata.get("method")},
        "layers": plan.layers,
        "positions": plan.positions,
        "operator": plan.operator,
        "norms": plan.norms,
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


def atomic_write(path: Path, text: str) -> None:
    """Write a whole file or nothing: temp file in the same folder, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def run_lock(out: Path):
    """Refuse a second process writing into the same run folder; name the holder."""
    lock = out / ".lock"
    me = f"{socket.gethostname()}:{os.getpid()}"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            holder = lock.read_text().strip()
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # released meanwhile
            holder, age = "", math.inf
        host, _, pid = holder.partition(":")
        dead = host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))
        unwritten = not holder and age > 5  # its process died between creating and writing it
        fd = None
        if dead or unwritten:
            lock.unlink(missing_ok=True)  # left by a process that died
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:  # another process took it over first
                pass
        if fd is None:
            raise SweepError(
                f"{out} is in use by process {holder or 'unknown'} (lock file {lock}). Wait for it to "
                f"finish, or delete {lock} if that process is gone."
            ) from None
    os.write(fd, me.encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def process_group() -> tuple[int, int, Callable[[], None]]:
    """(number of processes, this process's rank, barrier): accelerate's when launched by it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0, lambda: None
    from accelerate import PartialState

    state = PartialState()
    return state.num_processes, state.process_index, state.wait_for_everyone


def default_batch_size(model) -> int:
    """Rows per forward: a GPU is kept busy only by larger batches; out-of-memory halves it anyway."""
    return 1024 if model_device(model).type == "cuda" else 256


def _chunks(task, chunk_size: int, limit: int | None) -> list[list[int]]:
    n = len(task.items if task.kind == "alignment" else task.questions)
    n = min(n, limit) if limit else n
    return [list(range(s, min(s + chunk_size, n))) for s in range(0, n, chunk_size)]


def _score_batch(model, pad: int, seqs, batch: list[int], group: list[float], steering: Steering, plan: SweepPlan):
    """Score one batch; on out-of-memory, halve it (and the plan's batch size) and retry."""
    import torch

    from repe_tradeoff.scoring import Scores

    try:
        return score(model, pad, [seqs.prompts[r] for r in batch], [seqs.continuations[r] for r in batch],
                     group, steering, seqs.probe_ids)
    except torch.OutOfMemoryError:
        if len(batch) == 1:
            raise SweepError(
                f"one sequence at {len(group)} norms does not fit in memory: use fewer norms per pass "
                "(--batch-size below the number of norms), a smaller dtype, or --device auto"
            ) from None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        plan.batch_size = max(1, plan.batch_size // 2)
        log.warning("out of memory at %d sequences × %d norms; continuing with --batch-size %d",
                    len(batch), len(group), plan.batch_size)
        half = len(batch) // 2
        a = _score_batch(model, pad, seqs, batch[:half], group, steering, plan)
        b = _score_batch(model, pad, seqs, batch[half:], group, steering, plan)
        probes = None if a.probe_logprobs is None else torch.cat([a.probe_logprobs, b.probe_logprobs])
        return Scores(torch.cat([a.continuation, b.continuation]), probes, torch.cat([a.logit_shift, b.logit_shift]))


def score_chunk(model, tokenizer, seqs, rows: list[int], plan: SweepPlan, steering: Steering):
    """Score the chunk's sequences at every norm, in forward passes of ≤ batch_size rows."""
    import torch

    from repe_tradeoff.scoring import Scores

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    groups = max(1, math.ceil((len(plan.norms) + 1) / plan.batch_size))
    per_group = math.ceil(len(plan.norms) / groups)
    norm_groups = [plan.norms[i : i + per_group] for i in range(0, len(plan.norms), per_group)]
    order = sorted(rows, key=lambda r: (len(seqs.prompts[r]), seqs.owners[r], r))  # a prompt's sequences together
    parts = []
    for group in norm_groups:
        step = max(1, plan.batch_size // (len(group) + (0.0 not in group)))
        parts.append([_score_batch(model, pad, seqs, order[i : i + step], group, steering, plan)
                      for i in range(0, len(order), step)])
    position = {r: i for i, r in enumerate(order)}
    back = torch.tensor([position[r] for r in rows])

    def join(field: str):
        if getattr(parts[0][0], field) is None:
            return None
        return torch.cat([torch.cat([getattr(b, field) for b in group]) for group in parts], 1)[back]

    return Scores(join("continuation"), join("probe_logprobs"), join("logit_shift"))


def _generate_chunk(model, tokenizer, task: AlignmentMetric, item_ids, plan: SweepPlan, vector) -> list[dict]:
    scorer = response_scorer(plan.response_scorer)
    prompts = [task.items[i].prompt for i in item_ids]
    texts = generate(
        model, tokenizer, prompts, vector, plan.norms, layers=plan.layers, positions=plan.positions,
        operator=plan.operator, max_new_tokens=plan.max_new_tokens, template=task.template,
    )
    out = []
    for k, r in enumerate(plan.norms):
        for j, item in enumerate(item_ids):
            text = texts[j][k]
            out.append({"task": task.name, "kind": "alignment", "norm": r, "item": item,
                        "alignment": round(float(scorer(text)), 7), "response": text})
    return out


def run_sweep(
    model,
    tokenizer,
    vector: SteeringVector,
    plan: SweepPlan,
    out: str | Path,
    *,
    config: dict,
    limit: int | None = None,
    progress=None,
) -> Path:
    """Run (or resume) a sweep into ``out`` and return the folder."""
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
                atomic_write(cfg_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
            _write_in_plan_order(items_path, _complete_chunks(items_path, expected), order)  # drop torn chunks
        barrier()
        done = set(_complete_chunks(items_path, expected))
        pending = [entry for entry in plan_chunks if (entry[0].name, entry[1]) not in done]
        mine = pending[rank::world]  # chunks are dealt out to processes in turn
        if progress:
            progress.start(sum(len(ids) for _, _, ids in mine) * len(plan.norms), 0)
        steering = Steering(vector, tuple(plan.layers), plan.positions, plan.operator, plan.share_lower,
                            plan.share_prompts)
        sequences = {}
        with open(items_path, "ab") as f:
            for task, chunk, ids in mine:
                if task.kind == "alignment" and task.scorer == "generate":
                    records = _generate_chunk(model, tokenizer, task, ids, plan, vector)
                else:
                    if task.name not in sequences:
                        sequences[task.name] = task.sequences(tokenizer)
                    seqs = sequences[task.name]
                    wanted = set(ids)
                    rows = [r for r, owner in enumerate(seqs.owners) if owner in wanted]
                    scores = score_chunk(model, tokenizer, seqs, rows, plan, steering)
                    records = task.records(scores, plan.norms, ids)
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


def aggregate(items: list[dict]) -> list[dict]:
    """Mean, standard error and count per task × metric × norm, in a fixed order."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    order: dict[str, int] = {}
    for rec in items:
        order.setdefault(rec["task"], len(order))
        metrics = ("alignment",) if rec["kind"] == "alignment" else HELPFULNESS_METRICS
        for metric in metrics:
            if metric in rec:
                groups[(rec["task"], rec["kind"], metric, rec["norm"])].append(rec[metric])
    metric_rank = {m: i for i, m in enumerate(("alignment",) + HELPFULNESS_METRICS)}
    points = []
    for (task, kind, metric, norm), values in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], metric_rank[kv[0][2]], kv[0][3])
    ):
        arr = np.asarray(values, dtype=np.float64)
        stderr = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
        points.append({"task": task, "kind": kind, "metric": metric, "norm": norm,
                       "mean": round(float(arr.mean()), 9), "stderr": round(stderr, 9), "n": len(arr)})
    return points


def read_items(out: Path) -> list[dict]:
    path = Path(out) / "items.jsonl"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_points(out: Path) -> Path:
    points = aggregate(read_items(out))
    path = Path(out) / "points.jsonl"
    atomic_write(path, "".join(json.dumps(p, sort_keys=True) + "\n" for p in points))
    return path
