"""The files of a run folder: the one place that reads and writes them.

``config.json`` (what ran), ``items.jsonl`` (one line per task × norm × item),
``points.jsonl`` (means over items, derived from the items) and ``fits.json`` (the fitted
theory; its typed models are in :mod:`repe_tradeoff.runs.schema`), and the response, baseline
and atlas files. The formats are described in ``docs/run-files.md``. Sweep, theory and report
all go through this package; nothing here imports torch.
"""

from __future__ import annotations

from repe_tradeoff.runs.jsonio import (
    FormatVersionError,
    RunFileError,
    atomic_write,
    norm_key,
    numbered_rows,
    read_jsonl,
    write_json,
    write_jsonl,
)
from repe_tradeoff.runs.metrics import (
    DEFAULT_CHOICES,
    KINDS,
    METRICS,
    Metric,
    chance_level,
    metrics_of,
)
from repe_tradeoff.runs.points import (
    Curve,
    TaskItems,
    aggregate,
    curves_of,
    read_item_rows,
    read_points,
    task_items,
    write_points,
)
from repe_tradeoff.runs.run import (
    JointRun,
    RunData,
    read_atlas,
    read_baseline,
    read_config,
    read_fits,
    read_generations,
    read_joint,
    read_predicted,
    read_response,
    read_run,
    recorded_config,
    write_atlas,
    write_baseline,
    write_config,
    write_fits,
    write_generations,
    write_predicted,
    write_response,
)

__all__ = [
    "recorded_config",
    "read_generations",
    "write_generations",
    "FormatVersionError",
    "Curve",
    "DEFAULT_CHOICES",
    "JointRun",
    "KINDS",
    "METRICS",
    "Metric",
    "RunData",
    "RunFileError",
    "TaskItems",
    "aggregate",
    "atomic_write",
    "chance_level",
    "curves_of",
    "metrics_of",
    "norm_key",
    "numbered_rows",
    "read_atlas",
    "read_baseline",
    "read_config",
    "read_fits",
    "read_item_rows",
    "read_joint",
    "read_jsonl",
    "read_points",
    "read_predicted",
    "read_response",
    "read_run",
    "task_items",
    "write_atlas",
    "write_baseline",
    "write_config",
    "write_fits",
    "write_json",
    "write_jsonl",
    "write_points",
    "write_predicted",
    "write_response",
]
