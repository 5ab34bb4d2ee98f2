"""The commands that run a whole study: run (a YAML configuration) and demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from repe_tradeoff.cli.app import (
    BASELINE_HELP,
    BUDGET_HELP,
    SweepProgress,
    app,
    command_line,
    option_errors,
    out_console,
    print_answer,
)


@app.command()
def run(config: Path = typer.Argument(..., help="A YAML run configuration (see examples/).")):
    """Run a whole study from a YAML config: every behavior × task × layer set × method."""
    from repe_tradeoff.workflows.settings import load_config
    from repe_tradeoff.workflows.study import run_study

    cfg = load_config(config)
    report_path, runs = run_study(cfg, progress=SweepProgress(), command=command_line())
    if len(runs) == 1:
        print_answer(runs[0], "report:", report_path)
    else:
        out_console.print(f"report: {report_path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o"),
    quick: bool = typer.Option(False, "--quick", help="Fewer items and norms (a few minutes on a laptop CPU)."),
    max_loss: str = typer.Option("0.05", "--max-helpfulness-loss", help=BUDGET_HELP),
    baseline_prompt: Optional[str] = typer.Option(None, "--baseline-prompt", help=BASELINE_HELP),
):
    """The main job on the embedded model: harmfulness vector, sweep, fits, diagnostics, report."""
    from pydantic import ValidationError

    from repe_tradeoff.workflows.study import run_study

    try:
        cfg = demo_config(out, quick, max_loss, baseline_prompt)
    except ValidationError as err:
        raise typer.BadParameter(option_errors(err)) from None
    report_path, runs = run_study(cfg, progress=SweepProgress("demo sweep"), command=command_line())
    print_answer(runs[0], "report:", report_path)


def demo_config(out: Path, quick: bool, max_loss: str = "0.05", baseline_prompt: str | None = None):
    from repe_tradeoff.workflows.settings import FitSpec, StudyConfig

    # The norms are measured by the sequential plan (norms: auto), not from a multiple of ‖h‖.
    if quick:  # 16 items per task
        return StudyConfig(out=out, norms="auto", limit=16, baseline_prompt=baseline_prompt,
                           fluency=["neutral"], fit=FitSpec(n_boot=100, max_helpfulness_loss=max_loss))
    return StudyConfig(out=out, norms="auto", limit=48,  # 48 items per task
                       baseline_prompt=baseline_prompt, fluency=["neutral"],
                       fit=FitSpec(max_helpfulness_loss=max_loss))
