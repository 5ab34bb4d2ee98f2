"""The commands that work on run folders: fit, report, off-target, import-paper, export-lm-eval."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from repe_tradeoff.cli.app import (
    BUDGET_HELP,
    MODEL_HELP,
    app,
    console,
    load_lm,
    out_console,
    print_answer,
)


@app.command()
def fit(
    run: Path = typer.Argument(..., help="A run folder holding points.jsonl."),
    choices: Optional[int] = typer.Option(None, "--choices", help="Options per question k (when config.json lacks it)."),
    window: Optional[float] = typer.Option(None, "--window", help="Half-width |r| ≤ w of the local quadratic fit."),
    lam: float = typer.Option(1.0, "--lambda", help="Exchange rate: helpfulness lost per unit of alignment gained."),
    n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap replicates over items."),
    max_loss: str = typer.Option("0.05", "--max-helpfulness-loss", help=BUDGET_HELP),
):
    """Fit the paper's laws, check its assumptions and find the efficient regime; writes fits.json."""
    from repe_tradeoff.theory import fit_run

    kwargs = {"choices": choices, "lam": lam, "n_boot": n_boot, "max_helpfulness_loss": max_loss,
              "command": " ".join(["repe-tradeoff", *sys.argv[1:]])}
    if window is not None:
        kwargs["window"] = window
    fits = fit_run(run, **kwargs)
    for warning in fits.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    if fits.get("joint") is not None:  # a joint run has no one-vector recommendation
        from repe_tradeoff.report.joint import joint_answer_lines
        from repe_tradeoff.runs import read_fits

        for line in joint_answer_lines(read_fits(run)):
            out_console.print(line, highlight=False, soft_wrap=True)
        out_console.print(f"wrote {run / 'fits.json'}", highlight=False, soft_wrap=True)
        return
    print_answer(run, "wrote", run / "fits.json")


@app.command()
def report(run: Path = typer.Argument(..., help="A run folder (points.jsonl, fits.json).")):
    """(Re)build the plots and the HTML report from a run folder, without the model."""
    from repe_tradeoff.report import build_report

    if not (run / "fits.json").exists():
        from repe_tradeoff.theory import fit_run

        fit_run(run)
    out_console.print(f"wrote {build_report(run)}")


@app.command("off-target")
def off_target_cmd(runs: list[Path] = typer.Argument(..., help="Run folders (one vector each, or joint), fitted or not.")):
    """The matrix of alignment slopes at r = 0, vector × behavior, with 95% CIs, from the runs' fits.json."""
    from repe_tradeoff.runs import read_fits
    from repe_tradeoff.theory import fit_run

    rows = []
    for run in runs:
        fits = read_fits(run) if (run / "fits.json").exists() else None
        if fits is None or not fits.off_target:
            fit_run(run)
            fits = read_fits(run)
        rows += fits.off_target
    tasks = list(dict.fromkeys(t for r in rows for t in r.slopes))
    if not tasks:
        raise typer.BadParameter("none of the runs scores an alignment task; sweep with --alignment BEHAVIOR")
    table = Table(title="d alignment / dr at r = 0 [95% CI]")
    for col in ("vector (read for)", *tasks):
        table.add_column(col, justify="right")
    for r in rows:
        cells = []
        for t in tasks:
            slope = r.slopes.get(t)
            ci = slope.ci if slope is not None and slope.ci and None not in slope.ci else None
            cells.append("—" if slope is None or slope.value is None
                         else f"{slope.value:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""))
        table.add_row(r.vector + (f" ({r.steered})" if r.steered else ""), *cells)
    out_console.print(table)


@app.command("import-paper")
def import_paper(
    helpfulness_json: Path = typer.Argument(..., help="An authors' helpfulness curve (p_mean …)."),
    behavior_json: Path = typer.Argument(..., help="An authors' behavior curve (behavior_*_mean …)."),
    out: Path = typer.Option(..., "--out", "-o"),
):
    """Turn the paper authors' published curves into a run folder for `fit` and `report`."""
    from repe_tradeoff.theory import import_paper_curves

    command = " ".join(["repe-tradeoff", *sys.argv[1:]])
    out_console.print(f"wrote {import_paper_curves(helpfulness_json, behavior_json, out, command=command)}")


@app.command("export-lm-eval")
def export_lm_eval(
    vector: Path = typer.Option(..., "--vector"),
    norm: float = typer.Option(..., "--norm", "-r"),
    out: Path = typer.Option(..., "--out", "-o", help="The .pt file for lm-eval's `steered` model."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
):
    """Write a vector at norm r in the format lm-evaluation-harness's `steered` model reads."""
    from repe_tradeoff.vectors.vector import SteeringVector, VectorError

    if not math.isfinite(norm):
        raise VectorError(f"--norm {norm}: the norm must be a finite number, e.g. the recommended r* of `fit`")
    vec = SteeringVector.load(vector)
    lm = load_lm(model, "float32", None, False)
    vec.check_model(lm.model, str(vector))
    vec.to_lm_eval(out, lm.model, norm)
    out_console.print(f"wrote {out}")
