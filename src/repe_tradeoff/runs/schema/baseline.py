"""Typed model of ``baseline.json``: the prompting comparison."""

from __future__ import annotations

from typing import Literal

from repe_tradeoff.runs.schema.base import Interval, Strict


class BaselineRow(Strict):
    """One condition of the prompting comparison: means over items with 95% intervals."""

    condition: str
    instruction: bool
    norm: float
    alignment: float | None
    alignment_ci: Interval | None = None
    n_alignment: int
    helpfulness: float | None
    helpfulness_ci: Interval | None = None
    n_helpfulness: int


class BaselineFile(Strict):
    format_version: Literal[1]
    instruction: str
    placement: Literal["prefix"]
    recommended_norm: float
    alignment_task: str | None
    helpfulness_task: str | None
    ci_method: str | None
    n_boot: int
    rows: list[BaselineRow]

    def row(self, instruction: bool, steered: bool) -> BaselineRow | None:
        return next((r for r in self.rows if r.instruction == instruction
                     and (r.norm != 0.0) == steered), None)
