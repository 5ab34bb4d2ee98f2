"""Typed model of ``config.json``: what ran. It accepts extra keys (a sweep records more about
itself than any reader needs).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from repe_tradeoff.runs.schema.base import Open, Strict


class TaskConfig(Open):
    name: str
    kind: Literal["alignment", "helpfulness", "fluency"]
    n_items: int | None = None
    n_choices: Annotated[int, Field(ge=2)] | None = None
    format: str | None = None
    scorer: str | None = None
    template: str | None = None
    max_new_tokens: int | None = None
    sha256: str | None = None
    instruction: str | None = None


class VectorSource(Open):
    """Where an imported vector came from (docs/vector-formats.md)."""

    format: Literal["llama.cpp", "lm-eval", "tensors", "steering-vectors", "repeng"]
    layer_mapping: str
    file: str | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    direction_norms: dict[str, float] | None = None


class VectorInfo(Open):
    sha256: str | None = None
    layers: list[int] | None = None
    method: str | None = None
    behavior: str | None = None


class NormScale(Open):
    residual_norm: dict[str, float] = {}
    relative_per_unit_r: dict[str, float] = {}
    total_per_unit_r: float | None = None


class JointVectorInfo(Open):
    """One vector of a joint sweep: the name its norms are recorded under, and its grid."""

    name: str
    sha256: str | None = None
    layers: list[int] | None = None
    method: str | None = None
    behavior: str | None = None
    norms: list[float] = []


class GridStep(Strict):
    """One step of the grid's history: the norms it added and how they were chosen."""

    source: Literal["grid", "auto", "refine", "sequential"]
    added: list[float]


class GridSide(Strict):
    end: float
    criterion: Literal["helpfulness", "alignment", "plateau", "limit"]
    predicted: float | None = None
    helpfulness_fallen: float | None = None
    alignment: dict[str, float] = {}


class GridEvaluation(Strict):
    step: Literal["probe", "bracket", "bisect"]
    norm: float
    helpfulness: dict[str, float] = {}
    alignment: dict[str, float] = {}


class AutoGrid(Strict):
    """How ``norms: auto`` found the grid (docs/run-files.md)."""

    points: int
    search_items: int
    probe: float
    range: list[float]
    fraction: float
    margin: float
    sides: dict[Literal["negative", "positive"], GridSide]
    passes: int
    evaluations: list[GridEvaluation]


class RunConfig(Open):
    format_version: int = 1
    model: str | None = None
    vector: VectorInfo | None = None
    vectors: list[JointVectorInfo] = []
    vector_source: VectorSource | None = None
    vector_sources: list[VectorSource | None] = []
    orthogonalize: bool = False
    cosines: dict[str, float] = {}
    cosines_before: dict[str, float] = {}
    steered_behavior: str | None = None
    norms: list[float] = []
    grid_history: list[GridStep] = []
    auto_grid: AutoGrid | None = None
    tasks: list[TaskConfig] = []
    norm_scale: NormScale | None = None
    command: str | None = None
    config_hash: str | None = None
