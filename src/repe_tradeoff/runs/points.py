"""``items.jsonl`` and ``points.jsonl``: per-item records, their means over items, and the curves
and per-item tables that theory and report read from them.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repe_tradeoff.runs.jsonio import (
    RunFileError,
    as_number,
    norm_key,
    numbered_rows,
    read_jsonl,
    write_jsonl,
)
from repe_tradeoff.runs.metrics import KINDS, METRICS, metrics_of


def _point_key(rec: dict[str, Any]):
    """A record's grid point: its ``norm``, or (a joint sweep) its ``norms`` as sorted pairs."""
    return rec["norm"] if "norm" in rec else tuple(sorted(rec["norms"].items()))


def aggregate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, standard error (ddof 1) and count per task × metric × norm (or joint grid point
    ``norms``), in a fixed order."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    order: dict[str, int] = {}
    for rec in items:
        order.setdefault(rec["task"], len(order))
        for metric in metrics_of(rec["kind"]):
            if rec.get(metric) is not None:
                groups[(rec["task"], rec["kind"], metric, _point_key(rec))].append(rec[metric])
    rank = {m: i for i, m in enumerate(METRICS)}
    points = []
    for (task, kind, metric, norm), values in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], rank[kv[0][2]], kv[0][3])
    ):
        arr = np.asarray(values, dtype=np.float64)
        stderr = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
        where = {"norms": dict(norm)} if isinstance(norm, tuple) else {"norm": norm}
        points.append({"task": task, "kind": kind, "metric": metric, **where,
                       "mean": round(float(arr.mean()), 9), "stderr": round(stderr, 9),
                       "n": int(arr.size)})
    return points


def read_item_rows(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / "items.jsonl")


def write_points(run_dir: Path) -> Path:
    """Derive ``points.jsonl`` from ``items.jsonl``."""
    path = Path(run_dir) / "points.jsonl"
    write_jsonl(path, aggregate(read_item_rows(run_dir)))
    return path


@dataclass(frozen=True)
class Curve:
    """One metric of one task over the norm grid, sorted by norm; NaN where unknown."""

    task: str
    kind: str
    metric: str
    norms: np.ndarray
    mean: np.ndarray
    stderr: np.ndarray
    n: np.ndarray

    @property
    def has_stderr(self) -> bool:
        return bool(np.isfinite(self.stderr).any())

    def at(self, r: float, tol: float = 1e-9) -> float | None:
        hit = np.flatnonzero(np.abs(self.norms - r) <= tol)
        return float(self.mean[hit[0]]) if hit.size else None


def read_points(path: Path, warnings: list[str]) -> tuple[dict[tuple[str, str], Curve], dict[str, str]]:
    """``points.jsonl`` as curves keyed by ``(task, metric)`` and the kind of every task."""
    return curves_of(numbered_rows(Path(path)), Path(path), warnings)


def curves_of(rows: list[tuple[int, dict[str, Any]]], path: Path,
              warnings: list[str]) -> tuple[dict[tuple[str, str], Curve], dict[str, str]]:
    """:func:`read_points` of rows already read (``(line number, object)``)."""
    if not rows:
        raise RunFileError(f"{path} is empty: it needs one line per task × metric × norm")
    grouped: dict[tuple[str, str], dict[float, tuple[float, float, float]]] = {}
    kinds: dict[str, str] = {}
    duplicates, unknown = 0, set()
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        for key in ("metric", "norm", "mean"):
            if key not in row:
                raise RunFileError(f"{where}: missing `{key}` (see docs/run-files.md)")
        metric = str(row["metric"])
        kind = row.get("kind") or (METRICS[metric].kind if metric in METRICS else None)
        if kind is None:
            unknown.add(metric)
            continue
        if kind not in KINDS:
            raise RunFileError(f"{where}: `kind` is {kind!r}; use one of {', '.join(KINDS)}")
        task = str(row.get("task") or kind)
        norm, mean = as_number(row["norm"], where, "norm"), as_number(row["mean"], where, "mean")
        if not (math.isfinite(norm) and math.isfinite(mean)):
            warnings.append(f"{path.name}:{lineno}: non-finite norm or mean ignored")
            continue
        se = np.nan if row.get("stderr") is None else as_number(row["stderr"], where, "stderr")
        se = se if math.isfinite(se) and se >= 0 else np.nan
        n = np.nan if row.get("n") is None else as_number(row["n"], where, "n")
        if kinds.setdefault(task, kind) != kind:
            raise RunFileError(
                f"{where}: task {task!r} is both {kinds[task]!r} and {kind!r}; give each a name"
            )
        slot = grouped.setdefault((task, metric), {})
        duplicates += norm_key(norm) in slot
        slot[norm_key(norm)] = (mean, se, n)
    if unknown:
        warnings.append("points with unknown metrics and no `kind` ignored: "
                        + ", ".join(sorted(unknown)))
    if duplicates:
        warnings.append(f"{duplicates} duplicate task/metric/norm points in points.jsonl: "
                        "kept the last")
    curves = {}
    for (task, metric), slot in grouped.items():
        norms = np.array(sorted(slot), dtype=float)
        vals = np.array([slot[r] for r in norms], dtype=float).reshape(-1, 3)
        curves[(task, metric)] = Curve(task, kinds[task], metric, norms,
                                       vals[:, 0], vals[:, 1], vals[:, 2])
    return curves, kinds


@dataclass
class TaskItems:
    """Per-item values of one task (from ``items.jsonl``).

    ``values[metric]`` is an ``(n_items, n_norms)`` array, NaN where an item was not
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

    def option_count(self) -> int | None:
        """The number of options when every scored item has the same number, else None."""
        if self.scores is None:
            return None
        sizes = {s.size for col in self.scores for s in col if s is not None}
        return sizes.pop() if len(sizes) == 1 else None


def _row_kind(row: dict[str, Any]) -> str:
    return str(row.get("kind") or ("alignment" if "alignment" in row else "helpfulness"))


def task_items(rows: list[dict[str, Any]] | list[tuple[int, dict[str, Any]]],
               path: Path) -> dict[str, TaskItems]:
    """Group ``items.jsonl`` rows (or ``(line number, row)`` pairs) into one
    :class:`TaskItems` per task."""
    by_task: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    numbered = [r if isinstance(r, tuple) else (i, r) for i, r in enumerate(rows, start=1)]
    for lineno, row in numbered:
        if "norm" not in row or "item" not in row:
            raise RunFileError(f"{path}:{lineno}: an item needs `norm` and `item`")
        by_task.setdefault(str(row.get("task") or _row_kind(row)), []).append((lineno, row))
    out: dict[str, TaskItems] = {}
    for task, trows in by_task.items():
        norms = np.array(sorted({norm_key(as_number(r["norm"], f"{path}:{ln}", "norm"))
                                 for ln, r in trows}), dtype=float)
        column = {float(r): j for j, r in enumerate(norms)}
        ids: dict[str, int] = {}
        for _, r in trows:
            ids.setdefault(json.dumps(r["item"], sort_keys=True), len(ids))
        values: dict[str, np.ndarray] = {}
        answers = np.full(len(ids), -1, dtype=int)
        scores = ([[None] * len(ids) for _ in norms] if any("scores" in r for _, r in trows)
                  else None)
        for lineno, r in trows:
            i, j = ids[json.dumps(r["item"], sort_keys=True)], column[norm_key(float(r["norm"]))]
            for m in METRICS:
                if r.get(m) is not None:
                    arr = values.setdefault(m, np.full((len(ids), norms.size), np.nan))
                    arr[i, j] = as_number(r[m], f"{path}:{lineno}", m)
            if r.get("answer") is not None:
                answers[i] = int(as_number(r["answer"], f"{path}:{lineno}", "answer"))
            if scores is not None and r.get("scores") is not None:
                s = np.asarray(r["scores"], dtype=float)
                if s.ndim == 1 and s.size >= 2:
                    scores[j][i] = s
        out[task] = TaskItems(task, _row_kind(trows[0][1]), norms,
                              [json.loads(k) for k in ids], values, answers, scores)
    return out
