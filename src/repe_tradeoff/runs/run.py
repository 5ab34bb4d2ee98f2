"""A run folder as a whole: ``config.json``, ``fits.json``, ``baseline.json``, the response and
atlas files, and the typed view of a one-vector or joint run that theory and report read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from repe_tradeoff.runs.jsonio import (
    FormatVersionError,
    RunFileError,
    as_number,
    atomic_write,
    norm_key,
    numbered_rows,
    write_json,
    write_jsonl,
)
from repe_tradeoff.runs.metrics import DEFAULT_CHOICES
from repe_tradeoff.runs.points import Curve, TaskItems, curves_of, read_points, task_items
from repe_tradeoff.runs.schema import (
    FITS_FORMAT_VERSION,
    BaselineFile,
    FitsFile,
    PredictedPoint,
    ResponseFile,
    RunConfig,
    TaskConfig,
)


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


def recorded_config(run_dir: Path) -> dict[str, Any] | None:
    """``config.json`` as recorded, a plain dict (None when there is none): resuming and extending a
    sweep compare it key by key. Raises :class:`RunFileError` when it is not a JSON object."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise RunFileError(f"{path} is not a JSON object: use another --out folder, or delete {run_dir}")
    return raw


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Write ``config.json`` after checking it against :class:`RunConfig`."""
    path = Path(run_dir) / "config.json"
    RunConfig.model_validate(config)
    write_json(path, config)
    return path


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
        raise FormatVersionError(f"{path} has format_version {version!r}, this version reads "
                           f"{FITS_FORMAT_VERSION}; {rerun}")
    try:
        return FitsFile.model_validate(raw)
    except pydantic.ValidationError as err:
        raise _invalid(path, err, rerun) from None


def write_fits(run_dir: Path, fits: FitsFile) -> Path:
    path = Path(run_dir) / "fits.json"
    write_json(path, fits.model_dump(mode="json", by_alias=True))
    return path


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


def read_generations(run_dir: Path) -> list[dict[str, Any]]:
    """``generations.json``: steered continuations side by side ([] when there are none)."""
    if not (path := Path(run_dir) / "generations.json").is_file():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc.msg}); delete it and rerun the study") from None
    return [g for g in raw if isinstance(g, dict)] if isinstance(raw, list) else []


def write_generations(run_dir: Path, records: list[dict[str, Any]]) -> Path:
    """``generations.json``: one record per prompt × norm (``prompt``, ``norm``, ``text``)."""
    atomic_write(path := Path(run_dir) / "generations.json", json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    return path


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


def write_atlas(atlas_dir: Path, atlas: Any) -> Path:
    """``atlas.json`` and ``atlas.csv`` (one row per entry, each metric with _low/_high)."""
    from repe_tradeoff.runs.schema.atlas import ATLAS_METRICS

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
    """The :class:`~repe_tradeoff.runs.schema.atlas.AtlasFile` of an atlas folder."""
    from repe_tradeoff.runs.schema.atlas import AtlasFile

    path = Path(atlas_dir) / "atlas.json"
    if not path.is_file():
        raise RunFileError(f"{path} not found: give the folder an `atlas` command wrote (its --out)")
    try:
        return AtlasFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, pydantic.ValidationError):
        raise RunFileError(f"{path} is not a valid atlas file; rerun `repe-tradeoff atlas`") from None


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
        return tuple(norm_key(as_number(row["norms"][n], "norms", n)) for n in names)

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
