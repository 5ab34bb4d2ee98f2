"""Reading run files defensively and writing report files atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ALIGNMENT_METRICS = ("alignment",)
HELPFULNESS_METRICS = (
    "helpfulness",
    "helpfulness_norm",
    "helpfulness_vocab",
    "accuracy",
    "logit_shift",
)


class ReportError(ValueError):
    """A run folder cannot be turned into a report; the message says what to do."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _finite(x: Any) -> float | None:
    """``x`` as a finite float, or None."""
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass
class Curve:
    """One task × metric curve: means (and standard errors) over a grid of norms."""

    task: str
    kind: str
    metric: str
    norms: np.ndarray
    mean: np.ndarray
    stderr: np.ndarray  # NaN where unknown
    n: np.ndarray  # NaN where unknown

    def at(self, norm: float, tol: float = 1e-9) -> float | None:
        idx = np.nonzero(np.abs(self.norms - norm) <= tol)[0]
        return float(self.mean[idx[0]]) if idx.size else None


@dataclass
class RunFiles:
    """Everything a report reads from one run folder."""

    run_dir: Path
    config: dict[str, Any]
    curves: dict[tuple[str, str], Curve]
    generations: list[dict[str, Any]]
    fits: dict[str, Any]
    problems: list[str] = field(default_factory=list)  # files that could not be read
    _items: dict[str, Any] | None = field(default=None, repr=False)

    def task_items(self, task: str | None) -> Any:
        """items.jsonl of ``task`` (the first helpfulness task when None) as the theory
        module's ``TaskItems``, or None when the run has none or they cannot be read."""
        if self._items is None:
            self._items = {}
            path = self.run_dir / "items.jsonl"
            if path.is_file():
                from repe_tradeoff.theory.runfiles import read_items

                try:
                    self._items = read_items(path)
                except (ValueError, TypeError, KeyError, OSError) as exc:  # TheoryError: ValueError
                    self.problems.append(f"items.jsonl could not be read: {exc}")
        if task is None:
            return next((t for t in self._items.values() if t.kind == "helpfulness"), None)
        return self._items.get(task)

    # ------------------------------------------------------------------ tasks
    def tasks(self, kind: str) -> list[str]:
        seen: list[str] = []
        for c in self.curves.values():
            if c.kind == kind and c.task not in seen:
                seen.append(c.task)
        return seen

    def curve(self, task: str | None, metric: str) -> Curve | None:
        if task is not None and (task, metric) in self.curves:
            return self.curves[(task, metric)]
        if task is None:
            for (_, m), c in self.curves.items():
                if m == metric:
                    return c
        return None

    @property
    def alignment_task(self) -> str | None:
        block = self.fits.get("alignment")
        if (
            isinstance(block, dict)
            and isinstance(block.get("task"), str)
            and block["task"] in self.tasks("alignment")
        ):
            return block["task"]
        tasks = self.tasks("alignment")
        return tasks[0] if tasks else None

    @property
    def helpfulness_tasks(self) -> list[str]:
        tasks = self.tasks("helpfulness")
        block = self.fits.get("helpfulness")
        if isinstance(block, dict) and block.get("task") in tasks:
            tasks.remove(block["task"])
            tasks.insert(0, block["task"])
        return tasks

    def helpfulness_block(self, task: str) -> Any:
        """The fits.json helpfulness block of ``task`` (may be None or an error block)."""
        by_task = self.fits.get("by_task")
        if isinstance(by_task, dict) and task in by_task:
            return by_task[task]
        block = self.fits.get("helpfulness")
        if isinstance(block, dict) and block.get("task") in (task, None):
            return block
        return None

    def n_choices(self, task: str | None) -> int | None:
        """The number of options k of a helpfulness task: fits, then config, then items."""
        if task is not None:
            block = self.helpfulness_block(task)
            if isinstance(block, dict):
                k = _finite(block.get("k"))
                if k and k >= 2:
                    return int(k)
        tasks = self.config.get("tasks")
        for t in tasks if isinstance(tasks, list) else []:
            if isinstance(t, dict) and (task is None or t.get("name") == task):
                k = _finite(t.get("n_choices"))
                if k and k >= 2:
                    return int(k)
        items = self.task_items(task)
        if items is not None and items.scores is not None:
            sizes = {s.size for col in items.scores for s in col if s is not None}
            if len(sizes) == 1:
                return int(sizes.pop())
        return None

    # ------------------------------------------------------------------ names
    @property
    def model_name(self) -> str:
        m = self.config.get("model")
        if isinstance(m, dict):
            m = m.get("name") or m.get("id") or m.get("path")
        return str(m) if m not in (None, "") else "unknown model"


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} could not be read: {exc}")
        return None


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{path.name} could not be read: {exc}")
        return rows
    bad = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
    if bad:
        problems.append(f"{path.name}: {bad} line(s) were not JSON objects and were skipped")
    return rows


def infer_kind(metric: str) -> str:
    return "alignment" if metric in ALIGNMENT_METRICS else "helpfulness"


def curves_from_points(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Curve]:
    """Group points.jsonl rows into curves sorted by norm."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        metric = row.get("metric")
        norm = _finite(row.get("norm"))
        mean = _finite(row.get("mean"))
        if not isinstance(metric, str) or norm is None or mean is None:
            continue
        kind = row.get("kind") if row.get("kind") in ("alignment", "helpfulness") else None
        kind = kind or infer_kind(metric)
        task = row.get("task")
        # without a task name, all metrics of one kind form one task (named after the kind)
        task = str(task) if task not in (None, "") else kind
        entry = acc.setdefault((task, metric), {"kind": kind, "rows": {}})
        se = _finite(row.get("stderr"))
        n = _finite(row.get("n"))
        entry["rows"][round(norm, 9)] = (mean, np.nan if se is None else se, np.nan if n is None else n)
    curves = {}
    for (task, metric), entry in acc.items():
        norms = np.array(sorted(entry["rows"]), dtype=float)
        vals = np.array([entry["rows"][r] for r in norms], dtype=float).reshape(-1, 3)
        curves[(task, metric)] = Curve(
            task, entry["kind"], metric, norms, vals[:, 0], vals[:, 1], vals[:, 2]
        )
    return curves


def load_run(run_dir: Path) -> RunFiles:
    """Read a run folder; raise :class:`ReportError` when it holds no usable points."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a folder; give the run folder a sweep wrote into")
    points_path = run_dir / "points.jsonl"
    if not points_path.exists():
        raise ReportError(
            f"{points_path} does not exist: run `repe-tradeoff sweep` / `fit` first "
            "(a report is drawn from a run folder's points.jsonl and fits.json)"
        )
    problems: list[str] = []
    curves = curves_from_points(_read_jsonl(points_path, problems))
    if not curves:
        raise ReportError(
            f"{points_path} holds no usable points (each line needs `metric`, `norm`, `mean`); "
            "run `repe-tradeoff sweep` first"
        )
    config = _read_json(run_dir / "config.json", problems)
    fits = _read_json(run_dir / "fits.json", problems)
    gens = _read_json(run_dir / "generations.json", problems)
    if fits is not None and not isinstance(fits, dict):
        problems.append("fits.json is not a JSON object: rerun `repe-tradeoff fit`")
    if fits is None and not (run_dir / "fits.json").exists():
        problems.append("fits.json is missing: run `repe-tradeoff fit` to add the fitted laws")
    return RunFiles(
        run_dir=run_dir,
        config=config if isinstance(config, dict) else {},
        curves=curves,
        generations=[g for g in gens if isinstance(g, dict)] if isinstance(gens, list) else [],
        fits=fits if isinstance(fits, dict) else {},
        problems=problems,
    )


def fit_ok(block: Any) -> bool:
    """True when ``block`` is a fit that succeeded (has params, no error)."""
    return isinstance(block, dict) and isinstance(block.get("params"), dict) and not block.get(
        "error"
    )


def block_problem(block: Any, what: str) -> str | None:
    """None when ``block`` is usable, else a sentence saying why not."""
    if block is None:
        return f"{what}: not in fits.json (run `repe-tradeoff fit`)"
    if isinstance(block, dict) and block.get("error"):
        return f"{what}: the fit failed: {block['error']}"
    if not isinstance(block, dict):
        return f"{what}: unreadable entry in fits.json"
    return None
