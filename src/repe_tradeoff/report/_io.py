"""What a report reads: a run folder through :mod:`repe_tradeoff.runs`, with its fits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repe_tradeoff.errors import RepeTradeoffError
from repe_tradeoff.runs import (
    Curve,
    FormatVersionError,
    RunData,
    RunFileError,
    TaskItems,
    read_baseline,
    read_fits,
    read_generations,
    read_predicted,
    read_run,
)
from repe_tradeoff.runs.schema import (
    BaselineFile,
    FitsFile,
    HelpfulnessFits,
    HelpfulnessTaskFits,
    PredictedPoint,
)


def _optional(read, run_dir: Path, name: str, default: Any, problems: list[str]) -> Any:
    """An optional file of the run: what ``read`` makes of it, else ``default`` with the problem noted."""
    try:
        return read(run_dir)
    except RunFileError as err:
        problems.append(f"{name} could not be read: {err}")
        return default


class ReportError(RepeTradeoffError):
    """A run folder cannot be turned into a report; the message says what to do."""


def _finite(x: Any) -> float | None:
    """``x`` as a finite float, or None."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass
class RunFiles:
    """Everything a report reads from one run folder. ``fits`` is None when the folder has
    no usable ``fits.json`` (``problems`` then says why)."""

    data: RunData
    fits: FitsFile | None
    generations: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    baseline: BaselineFile | None = None  # the prompting comparison (baseline.json)
    predicted: list[PredictedPoint] = field(default_factory=list)  # predicted.jsonl

    def predicted_curve(self, task: str | None, metric: str) -> list[PredictedPoint]:
        """The prediction from the probe norms of one task × metric, sorted by norm."""
        return sorted((p for p in self.predicted if p.task == task and p.metric == metric),
                      key=lambda p: p.norm)

    @property
    def run_dir(self) -> Path:
        return self.data.run_dir

    @property
    def config(self) -> dict[str, Any]:
        """config.json as written (an empty dict when the folder has none)."""
        cfg = self.data.config
        return cfg.model_dump(mode="json", exclude_unset=True) if cfg is not None else {}

    @property
    def curves(self) -> dict[tuple[str, str], Curve]:
        return self.data.curves

    def curve(self, task: str | None, metric: str) -> Curve | None:
        return None if task is None else self.data.curve(task, metric)

    def task_items(self, task: str | None) -> TaskItems | None:
        return None if task is None else self.data.items.get(task)

    def tasks(self, kind: str) -> list[str]:
        return self.data.tasks_of_kind(kind)

    @property
    def alignment_task(self) -> str | None:
        """The alignment task of the tradeoff (fits.json's), else the run's first."""
        er = self.fits.efficient_regime if self.fits else None
        tasks = self.tasks("alignment")
        if er is not None and er.alignment_task in tasks:
            return er.alignment_task
        return tasks[0] if tasks else None

    @property
    def helpfulness_tasks(self) -> list[str]:
        """Helpfulness tasks, the one of the tradeoff first."""
        tasks = self.tasks("helpfulness")
        er = self.fits.efficient_regime if self.fits else None
        if er is not None and er.helpfulness_task in tasks:
            tasks.remove(er.helpfulness_task)
            tasks.insert(0, er.helpfulness_task)
        return tasks

    def helpfulness_fits(self, task: str) -> HelpfulnessTaskFits | None:
        return self.fits.helpfulness_tasks().get(task) if self.fits else None

    def response_block(self, task: str | None):
        """The response block of a task in fits.json (None when it has none)."""
        block = self.fits.tasks.get(task) if self.fits and task is not None else None
        return None if block is None else block.response

    def fitted_curve(self, task: str) -> HelpfulnessFits | None:
        """The fitted helpfulness curve of ``task``: options-restricted, else vocabulary."""
        tf = self.helpfulness_fits(task)
        return None if tf is None else tf.helpfulness or tf.helpfulness_vocab

    def n_choices(self, task: str | None) -> int | None:
        """The number of options k of a helpfulness task (fits.json's, else the run's)."""
        if task is None:
            return None
        tf = self.helpfulness_fits(task)
        return tf.k if tf is not None else self.data.resolve_k(task)[0]

    @property
    def model_name(self) -> str:
        m = self.data.config.model if self.data.config else None
        return m or "unknown model"


def load_run(run_dir: Path) -> RunFiles:
    """Read a run folder; raise :class:`ReportError` when it holds no usable points."""
    run_dir = Path(run_dir)
    try:
        data = read_run(run_dir)
    except RunFileError as err:
        raise ReportError(str(err)) from None
    if not data.curves:
        raise ReportError(f"{run_dir / 'points.jsonl'} holds no usable points (each line needs "
                          "`metric`, `norm`, `mean`); run `repe-tradeoff sweep` first")
    problems: list[str] = []
    try:
        fits = read_fits(run_dir)
    except FormatVersionError as err:  # another version's fits: reporting them would misread them
        raise ReportError(str(err)) from None
    except RunFileError as err:
        fits = None
        problems.append(f"fits.json could not be read: {err}")
    else:
        if fits is None:
            problems.append("fits.json is missing: run `repe-tradeoff fit` to add the fitted laws")
    gens = _optional(read_generations, run_dir, "generations.json", [], problems)
    baseline = _optional(read_baseline, run_dir, "baseline.json", None, problems)
    predicted = _optional(read_predicted, run_dir, "predicted.jsonl", [], problems)
    return RunFiles(data, fits, gens, problems, baseline, predicted)
