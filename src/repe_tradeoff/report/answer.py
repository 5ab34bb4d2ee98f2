"""The answer of a run in lines and rows: what the command line prints last, and the
steering-vs-prompting comparison of baseline.json (the page and summary.md render them)."""

from __future__ import annotations

from dataclasses import dataclass

from repe_tradeoff.report._io import RunFiles
from repe_tradeoff.report.content import recommendation
from repe_tradeoff.theory.decisions.budget import sig


@dataclass
class PromptingRow:
    condition: str
    alignment: str
    helpfulness: str


def _with_ci(x: float | None, ci) -> str:
    if x is None:
        return "—"
    lo_hi = f" [{sig(ci[0])}, {sig(ci[1])}]" if ci and None not in ci else ""
    return f"{sig(x)}{lo_hi}"


def prompting_rows(run: RunFiles) -> list[PromptingRow]:
    """Steering at r* vs prompting vs both (and neither), from baseline.json."""
    b = run.baseline
    if b is None:
        return []
    return [PromptingRow(r.condition.replace("r*", f"r* = {sig(r.norm)}") if r.norm else r.condition,
                         _with_ci(r.alignment, r.alignment_ci),
                         _with_ci(r.helpfulness, r.helpfulness_ci)) for r in b.rows]


def prompting_note(run: RunFiles) -> str | None:
    b = run.baseline
    if b is None:
        return None
    return (f"Prompting baseline: the instruction “{b.instruction}” is written before each "
            "task's text (a blank line between, inside the user turn of a chat template); "
            f"alignment is {b.alignment_task}, helpfulness P(correct) on {b.helpfulness_task}; "
            "means over items with 95% bootstrap intervals.")


def answer_lines(run_dir) -> list[str]:
    """What the command line prints last: the recommendation, its other readings, the baseline."""
    from repe_tradeoff.report._io import load_run  # a run folder, read as the report reads it

    run = load_run(run_dir)
    rec = recommendation(run)
    lines = [f"recommendation: {rec.text}", *rec.extras]
    for row in prompting_rows(run):
        lines.append(f"  {row.condition}: alignment {row.alignment}, helpfulness {row.helpfulness}")
    return lines
