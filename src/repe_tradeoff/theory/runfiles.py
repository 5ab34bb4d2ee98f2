"""Read a run folder (``points.jsonl``, ``items.jsonl``, ``config.json``) into plain data.

The formats are described in ``docs/run-files.md``. Only ``points.jsonl`` is required.
Everything here is numpy arrays and dataclasses; nothing imports a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TheoryError

#: The kind each known metric belongs to (used when a point has no ``kind``).
METRIC_KIND: dict[str, str] = {
    "alignment": "alignment",
    "helpfulness": "helpfulness",
    "helpfulness_norm": "helpfulness",
    "helpfulness_vocab": "helpfulness",
    "accuracy": "helpfulness",
    "logit_shift": "helpfulness",
}

_NORM_DIGITS = 9


def norm_key(r: float) -> float:
    """A norm rounded so that the same grid value read from two files compares equal."""
    return round(float(r), _NORM_DIGITS)


@dataclass(frozen=True)
class Curve:
    """One metric of one task over the norm grid (from ``points.jsonl``), sorted by norm."""

    task: str
    kind: str
    metric: str
    norms: np.ndarray
    mean: np.ndarray
    stderr: np.ndarray | None  # None when no point carries a standard error
    n: np.ndarray | None

    def value_at(self, r: float) -> float | None:
        hit = np.flatnonzero(np.isclose(self.norms, r, atol=1e-9, rtol=0))
        return float(self.mean[hit[0]]) if hit.size else None


@dataclass
class TaskItems:
    """Per-item values of one task (from ``items.jsonl``).

    ``values[metric]`` is an ``(n_items, n_norms)`` array with NaN where an item was not
    scored at a norm. ``scores[j][i]`` is item ``i``'s option scores at ``norms[j]`` (or None).
    """

    task: str
    kind: str
    norms: np.ndarray
    item_ids: list[Any]
    values: dict[str, np.ndarray]
    answers: np.ndarray  # -1 where unknown
    scores: list[list[np.ndarray | None]] | None

    def norm_index(self, r: float) -> int | None:
        hit = np.flatnonzero(np.isclose(self.norms, r, atol=1e-9, rtol=0))
        return int(hit[0]) if hit.size else None


@dataclass
class RunData:
    """Everything ``fit`` reads from a run folder."""

    run_dir: Path
    curves: dict[tuple[str, str], Curve]
    tasks: dict[str, str]  # task name -> kind, in run order
    items: dict[str, TaskItems]
    config: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)

    def curve(self, task: str, metric: str) -> Curve | None:
        return self.curves.get((task, metric))

    def task_config(self, task: str) -> dict[str, Any] | None:
        if not self.config:
            return None
        for t in self.config.get("tasks") or []:
            if isinstance(t, dict) and t.get("name") == task:
                return t
        return None

    def tasks_of_kind(self, kind: str) -> list[str]:
        return [t for t, k in self.tasks.items() if k == kind]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TheoryError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise TheoryError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append(obj)
    return rows


def _finite_float(value: Any, path: Path, lineno: int, key: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TheoryError(f"{path}:{lineno}: `{key}` must be a number, got {value!r}") from None
    return x


def read_points(path: Path, warnings: list[str] | None = None) -> tuple[dict, dict[str, str]]:
    """Read ``points.jsonl`` into curves keyed by ``(task, metric)`` and the task kinds."""
    path = Path(path)
    warnings = warnings if warnings is not None else []
    rows = _read_jsonl(path)
    if not rows:
        raise TheoryError(f"{path} is empty: it needs one line per task x metric x norm")
    grouped: dict[tuple[str, str], dict[float, tuple[float, float | None, float | None]]] = {}
    kinds: dict[str, str] = {}
    duplicates = 0
    unknown: set[str] = set()
    for lineno, row in enumerate(rows, start=1):
        for key in ("metric", "norm", "mean"):
            if key not in row:
                raise TheoryError(f"{path}:{lineno}: missing `{key}` (see docs/run-files.md)")
        metric = str(row["metric"])
        kind = row.get("kind") or METRIC_KIND.get(metric)
        if kind is None:
            unknown.add(metric)
            continue
        task = str(row.get("task") or kind)
        norm = _finite_float(row["norm"], path, lineno, "norm")
        mean = _finite_float(row["mean"], path, lineno, "mean")
        if not (math.isfinite(norm) and math.isfinite(mean)):
            warnings.append(f"{path.name}:{lineno}: non-finite norm or mean ignored")
            continue
        se = row.get("stderr")
        se = None if se is None else _finite_float(se, path, lineno, "stderr")
        if se is not None and not (math.isfinite(se) and se >= 0):
            se = None
        n = row.get("n")
        n = None if n is None else _finite_float(n, path, lineno, "n")
        prev = kinds.setdefault(task, str(kind))
        if prev != kind:
            raise TheoryError(
                f"{path}:{lineno}: task {task!r} is both {prev!r} and {kind!r}; give each a name"
            )
        slot = grouped.setdefault((task, metric), {})
        key = norm_key(norm)
        if key in slot:
            duplicates += 1
        slot[key] = (mean, se, n)
    if unknown:
        warnings.append(
            "points with unknown metrics and no `kind` ignored: " + ", ".join(sorted(unknown))
        )
    if duplicates:
        warnings.append(f"{duplicates} duplicate task/metric/norm points in points.jsonl: kept the last")
    curves: dict[tuple[str, str], Curve] = {}
    for (task, metric), slot in grouped.items():
        norms = np.array(sorted(slot), dtype=float)
        vals = [slot[r] for r in norms]
        mean = np.array([v[0] for v in vals], dtype=float)
        ses = [v[1] for v in vals]
        stderr = None if all(s is None for s in ses) else np.array(
            [np.nan if s is None else s for s in ses], dtype=float
        )
        ns = [v[2] for v in vals]
        n = None if all(x is None for x in ns) else np.array(
            [np.nan if x is None else x for x in ns], dtype=float
        )
        curves[(task, metric)] = Curve(task, kinds[task], metric, norms, mean, stderr, n)
    return curves, kinds


def read_items(path: Path, warnings: list[str] | None = None) -> dict[str, TaskItems]:
    """Read ``items.jsonl`` into one :class:`TaskItems` per task."""
    path = Path(path)
    warnings = warnings if warnings is not None else []
    rows = _read_jsonl(path)
    by_task: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for lineno, row in enumerate(rows, start=1):
        if "norm" not in row or "item" not in row:
            raise TheoryError(f"{path}:{lineno}: an item needs `norm` and `item`")
        kind = row.get("kind") or ("alignment" if "alignment" in row else "helpfulness")
        task = str(row.get("task") or kind)
        by_task.setdefault(task, []).append((lineno, row))
    out: dict[str, TaskItems] = {}
    metrics = [m for m in METRIC_KIND]
    for task, trows in by_task.items():
        kind = str(trows[0][1].get("kind") or ("alignment" if "alignment" in trows[0][1] else "helpfulness"))
        norms = np.array(sorted({norm_key(float(r["norm"])) for _, r in trows}), dtype=float)
        norm_pos = {float(r): j for j, r in enumerate(norms)}
        ids: dict[Any, int] = {}
        for _, r in trows:
            key = json.dumps(r["item"], sort_keys=True)
            ids.setdefault(key, len(ids))
        n_items, n_norms = len(ids), len(norms)
        values: dict[str, np.ndarray] = {}
        answers = np.full(n_items, -1, dtype=int)
        has_scores = any("scores" in r for _, r in trows)
        scores: list[list[np.ndarray | None]] | None = (
            [[None] * n_items for _ in range(n_norms)] if has_scores else None
        )
        for lineno, r in trows:
            i = ids[json.dumps(r["item"], sort_keys=True)]
            j = norm_pos[norm_key(float(r["norm"]))]
            for m in metrics:
                if m in r and r[m] is not None:
                    arr = values.get(m)
                    if arr is None:
                        arr = values[m] = np.full((n_items, n_norms), np.nan)
                    arr[i, j] = _finite_float(r[m], path, lineno, m)
            if "answer" in r and r["answer"] is not None:
                answers[i] = int(r["answer"])
            if scores is not None and r.get("scores") is not None:
                s = np.asarray(r["scores"], dtype=float)
                if s.ndim == 1 and s.size >= 2:
                    scores[j][i] = s
        out[task] = TaskItems(
            task=task,
            kind=kind,
            norms=norms,
            item_ids=[json.loads(k) for k in ids],
            values=values,
            answers=answers,
            scores=scores,
        )
    return out


def read_config(path: Path) -> dict[str, Any]:
    try:
        with Path(path).open(encoding="utf-8") as fh:
            cfg = json.load(fh)
    except json.JSONDecodeError as exc:
        raise TheoryError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(cfg, dict):
        raise TheoryError(f"{path}: expected a JSON object")
    return cfg


def read_run(run_dir: Path) -> RunData:
    """Read a run folder. ``points.jsonl`` is required, the other files are optional."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TheoryError(f"{run_dir} is not a folder: give the run folder written by `sweep`")
    points = run_dir / "points.jsonl"
    if not points.is_file():
        raise TheoryError(
            f"{points} not found: run `repe-tradeoff sweep ... --out {run_dir}` first "
            "or write a points.jsonl (see docs/run-files.md)"
        )
    warnings: list[str] = []
    curves, kinds = read_points(points, warnings)
    config = None
    if (run_dir / "config.json").is_file():
        config = read_config(run_dir / "config.json")
    items: dict[str, TaskItems] = {}
    if (run_dir / "items.jsonl").is_file():
        items = read_items(run_dir / "items.jsonl", warnings)
    order = list(kinds)
    if config:
        named = [t.get("name") for t in config.get("tasks") or [] if isinstance(t, dict)]
        order = [t for t in named if t in kinds] + [t for t in order if t not in named]
    tasks = {t: kinds[t] for t in order}
    return RunData(run_dir, curves, tasks, items, config, warnings)
