"""Typed model of ``atlas.json`` (documented in ``docs/run-files.md``), and its CSV columns."""

from __future__ import annotations

from typing import Literal

from repe_tradeoff.runs.schema.base import Strict

ATLAS_FORMAT_VERSION = 1
#: The per-entry numbers, each with a 95 % interval (the columns of atlas.csv, with _low/_high).
ATLAS_METRICS = ("alignment_slope", "helpfulness_curvature", "spread", "drift", "norm_at_budget",
                 "alignment_gain_at_budget", "separation_accuracy", "separation_effect")




class AtlasEstimate(Strict):
    """A number and its 95 % bootstrap interval; null where the probe says nothing (no budget
    crossing within the searched range, or an unbounded interval)."""

    value: float | None
    low: float | None
    high: float | None


class AtlasEntry(Strict):
    """One layer or band of contiguous layers, steered at ±h × each layer's residual norm."""

    layers: str  # "14" or "8-15"
    width: int
    first: int
    last: int
    probe_h: float
    rank: int | None  # by alignment gained at the budget (1 = most); null when it has none
    alignment_slope: AtlasEstimate
    helpfulness_curvature: AtlasEstimate
    spread: AtlasEstimate
    drift: AtlasEstimate
    norm_at_budget: AtlasEstimate
    alignment_gain_at_budget: AtlasEstimate
    separation_accuracy: AtlasEstimate
    separation_effect: AtlasEstimate


class AtlasCorrelation(Strict):
    """Pearson correlation across entries of the gain at the budget with the separation's AUC."""

    x: Literal["separation_effect"] = "separation_effect"
    y: Literal["alignment_gain_at_budget"] = "alignment_gain_at_budget"
    r: float | None
    low: float | None
    high: float | None
    n: int


class AtlasCost(Strict):
    """What the measurement computed: block-rows per sequence (one row through one block), and
    what a sweep of ``sweep_norms`` norms at the first entry's layers would compute."""

    seconds: float
    reading_seconds: float
    block_rows_per_sequence: int
    sweep_norms: int
    sweep_block_rows_per_sequence: int
    confirm_seconds: float | None = None  # the confirming sweeps, when any


class AtlasConfirmation(Strict):
    """A sweep of one entry (the confirmation plan's norms), measured beside the atlas' prediction."""

    layers: str
    run: str  # the sweep's run folder, relative to the atlas folder
    norms: list[float] = []  # the grid swept (in units of each layer's residual norm)
    n_items: int | None = None  # items per task the sweep measured
    alignment_slope: AtlasEstimate
    norm_at_budget: AtlasEstimate
    alignment_gain_at_budget: AtlasEstimate


class AtlasFile(Strict):
    """``atlas.json``, written by ``atlas``."""

    format_version: Literal[1] = ATLAS_FORMAT_VERSION
    command: str | None = None
    model: str
    behavior: str
    alignment_task: str
    helpfulness_task: str
    method: str
    n_layers: int
    widths: list[int]
    budget: float
    probe_fraction: float
    n_pairs: int
    n_heldout_pairs: int
    n_items: dict[str, int]
    n_boot: int
    entries: list[AtlasEntry]
    correlation: AtlasCorrelation
    best: str | None
    recommendation: str
    cost: AtlasCost
    confirmations: list[AtlasConfirmation] = []
    band_stride: int = 1  # wider bands start every band_stride layers (and the topmost one)
    confirm_plan: str | None = None  # how the confirming sweeps placed their norms (bracket, auto)
    confirm_items: int | None = None  # items per task of the confirming sweeps (null: all)
    best_from: Literal["predicted", "measured"] = "predicted"  # measured: the best confirmed entry
    warnings: list[str] = []
