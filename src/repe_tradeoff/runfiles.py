"""The files of a run folder: the one place that reads and writes them.

``config.json`` (what ran), ``items.jsonl`` (one line per task × norm × item),
``points.jsonl`` (means over items, derived from the items) and ``fits.json`` (the fitted
theory; its typed models are in :mod:`repe_tradeoff.run_schema`). The formats are
described in ``docs/run-files.md``. Sweep, theory and report all go through this module;
nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from repe_tradeoff.run_schema import (FITS_FORMAT_VERSION, BaselineFile, FitsFile, PredictedPoint,
                                      ResponseFile, RunConfig, TaskConfig)


class RunFileError(ValueError):
    """A run folder file that cannot be read; the message names the file and what to do."""


# --------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Metric:
    """A per-item value the sweep records. ``chance``: ``"1/k"`` (a probability over the k
    options, chance ``1/k``), ``"0"`` (a probability over the vocabulary) or None (not a
    probability). ``also``: other kinds of task that record it."""

    name: str
    kind: str
    chance: str | None
    also: tuple[str, ...] = ()


#: Every metric of ``items.jsonl``/``points.jsonl``, in the order points are written.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("alignment", "alignment", None),
        Metric("helpfulness", "helpfulness", "1/k"),
        Metric("helpfulness_norm", "helpfulness", "1/k"),
        Metric("helpfulness_vocab", "helpfulness", "0"),
        Metric("accuracy", "helpfulness", "1/k"),
        Metric("accuracy_norm", "helpfulness", "1/k"),  # lm-eval's acc_norm (lm-eval tasks only)
        Metric("logit_shift", "helpfulness", None),
        Metric("response_logprob", "alignment", None),
        Metric("exact_match", "helpfulness", "0"),
        Metric("kl", "fluency", None),
        Metric("perplexity", "fluency", None),
        Metric("generated_tokens", "helpfulness", None, also=("alignment", "fluency")),
    )
}
KINDS = ("alignment", "helpfulness", "fluency")
#: The number of options assumed when neither config.json, the caller nor the items give it.
DEFAULT_CHOICES = 4


def metrics_of(kind: str) -> list[str]:
    return [m.name for m in METRICS.values() if m.kind == kind or kind in m.also]


def chance_level(metric: str, k: int | None) -> float | None:
    """The value a metric takes when the model cannot tell the options apart."""
    rule = METRICS[metric].chance
    if rule == "1/k":
        return None if not k else 1.0 / k
    return 0.0 if rule == "0" else None


# --------------------------------------------------------------------------- writing
def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


# --------------------------------------------------------------------------- reading
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (blank lines skipped); a bad line names its number."""
    return [row for _, row in numbered_rows(path)]


def numbered_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line of a JSON-lines file."""
    path = Path(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunFileError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise RunFileError(f"{path}:{lineno}: expected one JSON object per line")
            rows.append((lineno, obj))
    return rows


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool):
        value = None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RunFileError(f"{where}: `{key}` must be a number, got {value!r}") from None


_NORM_DIGITS = 9


def norm_key(r: float) -> float:
    """A norm rounded so that the same grid value read from two files compares equal."""
    return round(float(r), _NORM_DIGITS)


# --------------------------------------------------------------------------- points
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
        norm, mean = _number(row["norm"], where, "norm"), _number(row["mean"], where, "mean")
        if not (math.isfinite(norm) and math.isfinite(mean)):
            warnings.append(f"{path.name}:{lineno}: non-finite norm or mean ignored")
            continue
        se = np.nan if row.get("stderr") is None else _number(row["stderr"], where, "stderr")
        se = se if math.isfinite(se) and se >= 0 else np.nan
        n = np.nan if row.get("n") is None else _number(row["n"], where, "n")
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


# --------------------------------------------------------------------------- items
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
        norms = np.array(sorted({norm_key(_number(r["norm"], f"{path}:{ln}", "norm"))
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
                    arr[i, j] = _number(r[m], f"{path}:{lineno}", m)
            if r.get("answer") is not None:
                answers[i] = int(_number(r["answer"], f"{path}:{lineno}", "answer"))
            if scores is not None and r.get("scores") is not None:
                s = np.asarray(r["scores"], dtype=float)
                if s.ndim == 1 and s.size >= 2:
                    scores[j][i] = s
        out[task] = TaskItems(task, _row_kind(trows[0][1]), norms,
                              [json.loads(k) for k in ids], values, answers, scores)
    return out


# --------------------------------------------------------------------------- config
def _invalid(path: Path, err: pydantic.ValidationError, fix: str) -> RunFileError:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return RunFileError(f"{path}: `{where}` {first['msg'].lower()}; {fix}")


def read_config(path: Path) -> RunConfig:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc.msg})") from None
    try:
        return RunConfig.model_validate(raw)
    except pydantic.ValidationError as err:
        raise _invalid(path, err, "see docs/run-files.md for config.json") from None


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Write ``config.json`` after checking it against :class:`RunConfig`."""
    path = Path(run_dir) / "config.json"
    RunConfig.model_validate(config)
    write_json(path, config)
    return path


# --------------------------------------------------------------------------- fits
def read_fits(run_dir: Path) -> FitsFile | None:
    """``fits.json`` of a run folder (None when there is none)."""
    path = Path(run_dir) / "fits.json"
    if not path.is_file():
        return None
    rerun = f"rerun `repe-tradeoff fit {run_dir}`"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc.msg}); {rerun}") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FITS_FORMAT_VERSION:
        raise RunFileError(f"{path} has format_version {version!r}, this version reads "
                           f"{FITS_FORMAT_VERSION}; {rerun}")
    try:
        return FitsFile.model_validate(raw)
    except pydantic.ValidationError as err:
        raise _invalid(path, err, rerun) from None


def write_fits(run_dir: Path, fits: FitsFile) -> Path:
    path = Path(run_dir) / "fits.json"
    write_json(path, fits.model_dump(mode="json", by_alias=True))
    return path


# --------------------------------------------------------------------------- baseline
def read_baseline(run_dir: Path) -> BaselineFile | None:
    """``baseline.json`` (the prompting comparison) of a run folder, None when there is none."""
    if not (path := Path(run_dir) / "baseline.json").is_file():
        return None
    try:
        return BaselineFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc.msg}); delete it and rerun the study") from None
    except pydantic.ValidationError as err:
        raise _invalid(path, err, "delete it and rerun the study (see docs/run-files.md)") from None


def write_baseline(run_dir: Path, baseline: BaselineFile) -> Path:
    write_json(path := Path(run_dir) / "baseline.json", baseline.model_dump(mode="json"))
    return path


# --------------------------------------------------------------------------- the response
def write_predicted(run_dir: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """``predicted.jsonl``: rows checked against :class:`PredictedPoint`."""
    path = Path(run_dir) / "predicted.jsonl"
    write_jsonl(path, [PredictedPoint.model_validate(r).model_dump() for r in rows])
    return path


def read_predicted(run_dir: Path) -> list[PredictedPoint]:
    """The rows of ``predicted.jsonl`` (empty when the folder has none)."""
    path = Path(run_dir) / "predicted.jsonl"
    try:
        return [PredictedPoint.model_validate(row) for _, row in numbered_rows(path)]
    except FileNotFoundError:
        return []
    except pydantic.ValidationError as err:
        raise _invalid(path, err, f"rerun `repe-tradeoff fit {run_dir}` or `predict`") from None


def write_response(run_dir: Path, response: ResponseFile) -> Path:
    path = Path(run_dir) / "response.json"
    write_json(path, response.model_dump(mode="json"))
    return path


def read_response(run_dir: Path) -> ResponseFile | None:
    path = Path(run_dir) / "response.json"
    if not path.is_file():
        return None
    try:
        return ResponseFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, pydantic.ValidationError):
        raise RunFileError(f"{path} is not a valid response file; rerun `repe-tradeoff predict`") from None


# --------------------------------------------------------------------------- an atlas
def write_atlas(atlas_dir: Path, atlas: Any) -> Path:
    """``atlas.json`` and ``atlas.csv`` (one row per entry, each metric with _low/_high)."""
    from repe_tradeoff.run_schema.atlas import ATLAS_METRICS

    path = Path(atlas_dir) / "atlas.json"
    write_json(path, atlas.model_dump(mode="json"))
    head = ["rank", "layers", "width", "probe_h"] + [f"{m}{s}" for m in ATLAS_METRICS for s in ("", "_low", "_high")]
    lines = [",".join(head)]
    for e in atlas.entries:
        cells = [e.rank, e.layers, e.width, e.probe_h]
        for m in ATLAS_METRICS:
            est = getattr(e, m)
            cells += [est.value, est.low, est.high]
        lines.append(",".join("" if c is None else str(c) for c in cells))
    atomic_write(Path(atlas_dir) / "atlas.csv", "\n".join(lines) + "\n")
    return path


def read_atlas(atlas_dir: Path) -> Any:
    """The :class:`~repe_tradeoff.run_schema.atlas.AtlasFile` of an atlas folder."""
    from repe_tradeoff.run_schema.atlas import AtlasFile

    path = Path(atlas_dir) / "atlas.json"
    if not path.is_file():
        raise RunFileError(f"{path} not found: give the folder an `atlas` command wrote (its --out)")
    try:
        return AtlasFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, pydantic.ValidationError):
        raise RunFileError(f"{path} is not a valid atlas file; rerun `repe-tradeoff atlas`") from None


# --------------------------------------------------------------------------- a run
@dataclass
class RunData:
    """A run folder read into memory: curves, items, configuration and fits."""

    run_dir: Path
    curves: dict[tuple[str, str], Curve]
    tasks: dict[str, str]  # task name -> kind, in run order
    items: dict[str, TaskItems]
    config: RunConfig | None
    warnings: list[str] = field(default_factory=list)
    joint: JointRun | None = None  # a joint sweep's grid; its curves and items are there, not above

    def curve(self, task: str, metric: str) -> Curve | None:
        return self.curves.get((task, metric))

    def tasks_of_kind(self, kind: str) -> list[str]:
        return [t for t, k in self.tasks.items() if k == kind]

    def task_config(self, task: str) -> TaskConfig | None:
        return next((t for t in self.config.tasks if t.name == task), None) if self.config else None

    def resolve_k(self, task: str, choices: int | None = None) -> tuple[int, str | None]:
        """The number of options of a helpfulness task and, when it is a guess or overrides
        ``choices``, a warning: config.json, then ``choices``, then the items, then 4."""
        tc = self.task_config(task)
        if tc is not None and tc.n_choices:
            if choices is not None and int(choices) != tc.n_choices:
                return tc.n_choices, (f"{task}: config.json says k = {tc.n_choices}, used "
                                      f"instead of choices = {choices}")
            return tc.n_choices, None
        if choices is not None:
            return int(choices), None
        items = self.items.get(task)
        k = items.option_count() if items is not None else None
        if k:
            return k, None
        return DEFAULT_CHOICES, (f"{task}: the number of options k is not in config.json; "
                                 f"assumed k = {DEFAULT_CHOICES} (pass --choices K)")


# --------------------------------------------------------------------------- joint runs
@dataclass
class JointRun:
    """A joint sweep of several vectors: ``grid[p]`` is grid point ``p`` (one norm per vector,
    in the order of ``names``). Its curves and items are those of a one-vector run whose
    "norm" is the point's index ``p`` (so ``curve.norms`` index ``grid``)."""

    names: list[str]
    grid: np.ndarray  # (points, vectors)
    curves: dict[tuple[str, str], Curve]
    items: dict[str, TaskItems]

    def point(self, norms: np.ndarray) -> np.ndarray:
        """The (n, vectors) grid coordinates of curve or item norms (point indices)."""
        return self.grid[np.asarray(norms, dtype=int)]


def _joint_rows(path: Path, names: list[str] | None) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    rows = numbered_rows(path)
    for lineno, row in rows:
        if not isinstance(row.get("norms"), dict):
            raise RunFileError(f"{path}:{lineno}: a joint run's line needs `norms` {{vector: r}}")
    names = names or sorted(rows[0][1]["norms"]) if rows else names or []
    for lineno, row in rows:
        if set(row["norms"]) != set(names):
            raise RunFileError(f"{path}:{lineno}: `norms` names {sorted(row['norms'])}, the run's vectors are "
                               f"{names}; rerun the sweep into a fresh folder")
    return names, rows


def read_joint(run_dir: Path, names: list[str] | None = None) -> JointRun:
    """``points.jsonl`` and ``items.jsonl`` of a joint run (``names``: the vectors' order)."""
    run_dir = Path(run_dir)
    names, points = _joint_rows(run_dir / "points.jsonl", names)
    items_path = run_dir / "items.jsonl"
    names, items = _joint_rows(items_path, names) if items_path.is_file() else (names, [])

    def key(row):
        return tuple(norm_key(_number(row["norms"][n], "norms", n)) for n in names)

    grid = sorted({key(r) for _, r in points} | {key(r) for _, r in items})
    index = {g: i for i, g in enumerate(grid)}

    def as_indexed(rows):
        return [(ln, {k: v for k, v in r.items() if k != "norms"} | {"norm": index[key(r)]}) for ln, r in rows]

    curves, _ = curves_of(as_indexed(points), run_dir / "points.jsonl", [])  # "norm": the point's index
    return JointRun(names, np.array(grid, dtype=float).reshape(-1, len(names)), curves,
                    task_items(as_indexed(items), items_path) if items else {})


def read_run(run_dir: Path) -> RunData:
    """Read a run folder. ``points.jsonl`` is required, ``config.json`` and ``items.jsonl``
    are optional. Raises :class:`RunFileError` naming the file and the fix."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFileError(f"{run_dir} is not a folder: give the run folder written by `sweep`")
    points = run_dir / "points.jsonl"
    if not points.is_file():
        raise RunFileError(
            f"{points} not found: run `repe-tradeoff sweep ... --out {run_dir}` first "
            "or write a points.jsonl (see docs/run-files.md)"
        )
    warnings: list[str] = []
    config = read_config(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
    joint = None
    first = next(iter(numbered_rows(points)), (0, {}))[1]
    if (config is not None and config.vectors) or ("norms" in first and "norm" not in first):
        joint = read_joint(run_dir, [v.name for v in config.vectors] if config and config.vectors else None)
        curves, items = {}, {}
        kinds = {task: c.kind for (task, _), c in joint.curves.items()}
    else:
        curves, kinds = read_points(points, warnings)
        items_path = run_dir / "items.jsonl"
        items = task_items(numbered_rows(items_path), items_path) if items_path.is_file() else {}
    named = [t.name for t in config.tasks] if config else []
    order = [t for t in named if t in kinds] + [t for t in kinds if t not in named]
    return RunData(run_dir, curves, {t: kinds[t] for t in order}, items, config, warnings, joint)
