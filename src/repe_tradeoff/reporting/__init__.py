"""Reports of a run folder: plots, an HTML page, summary.md and CSV tables.

(Named ``reporting`` so that the package never shadows the public function ``rt.report``.)
Works on run files only (``config.json``, ``points.jsonl``, ``items.jsonl``,
``generations.json``, ``fits.json``; see ``docs/run-files.md``), so a report can be
rebuilt anywhere without the model. Fits are never recomputed: curves are evaluated
from the parameters in ``fits.json``. A ``fits.json`` that does not match its schema is
named among the report's notes and the report is drawn from the points alone.

>>> from repe_tradeoff.reporting import build_report
>>> build_report("runs/harmfulness")  # doctest: +SKIP
PosixPath('runs/harmfulness/report.html')
"""

from __future__ import annotations

from pathlib import Path

from repe_tradeoff.reporting._io import ReportError, RunFiles, load_run
from repe_tradeoff.reporting.joint import JOINT_PLOTS, build_joint_report
from repe_tradeoff.reporting.page import comparison_html, run_html
from repe_tradeoff.reporting.plot_fluency import plot_fluency
from repe_tradeoff.reporting.plot_tradeoff import plot_diagnostics, plot_tradeoff
from repe_tradeoff.reporting.plots import (
    Rendered,
    plot_alignment,
    plot_comparison,
    plot_helpfulness,
    render,
    style,
)
from repe_tradeoff.reporting.tables import summary_md, write_tables
from repe_tradeoff.runs import atomic_write

__all__ = ["PLOTS", "ReportError", "build_comparison_report", "build_report"]

#: name -> (figure function, caption, why it may be missing)
PLOTS = {
    "alignment": (
        plot_alignment,
        (
            "Alignment E[B] against the steering norm r (mean ± standard error over prompts), "
            "with the tanh fit, the linear fit near r = 0 over its window, and the "
            "prediction from the probe norms with its 95% band over prompts."
        ),
        "no alignment points in points.jsonl",
    ),
    "helpfulness": (
        plot_helpfulness,
        (
            "Helpfulness against r: P(correct) restricted to the answer options, over the full "
            "vocabulary, and accuracy; the corollary fit, the local quadratic over its window, "
            "the prediction from the probe norms 0, ±h, ±2h with its 95% band "
            "over questions, the paper's prediction from the A1/A3 diagnostics, and the chance "
            "level 1/k."
        ),
        "no helpfulness points in points.jsonl",
    ),
    "fluency": (
        plot_fluency,
        (
            "What steering costs beyond the answers: P(correct) (or exact match of greedy answers), "
            "the mean next-token KL(P₀ ‖ P_r) on neutral text, and the unsteered model's perplexity "
            "of the steered continuations of that text, against r; hatched: norms where the model "
            "breaks down (fits.json's breakdown), left out of the fits."
        ),
        "no fluency task in this run (sweep with --fluency neutral)",
    ),
    "tradeoff": (
        plot_tradeoff,
        (
            "Helpfulness against alignment, one point per norm coloured by r, with the Pareto "
            "frontier and the recommended norm from fits.json."
        ),
        "the tradeoff needs an alignment and a helpfulness task measured at common norms",
    ),
}

#: One assumption-check figure per helpfulness task: (figure function, caption, why missing)
CHECKS_PLOT = (
    plot_diagnostics,
    (
        "Assumption checks of {task}: (a) A1, the mean logit shift ‖U·δ_r‖ against r with "
        "its linear fit; (b) histograms of the A3 projections X_i(r) at a few norms with "
        "Gaussian fits; (c) the spread of X_i(r) against |r| with σ·|r|."
    ),
    "the diagnostics plot of {task} needs logit_shift points or items.jsonl with option scores",
)


def _figures(run: RunFiles):
    """(name, figure function, caption, why missing) of every figure of one run."""
    for name, (fn, caption, why) in PLOTS.items():
        yield name, fn, caption, why
    if isinstance(run.config.get("sequential"), dict):  # the sequential plan: where it measured, and the refit
        from repe_tradeoff.reporting.plot_sequential import plot_sequential

        yield ("sequential", plot_sequential,
               "Where the sequential plan measured: P(correct) at each measured norm, the response refit on "
               "all of them with its 95% band over questions, the budget line and the bracket of its edge.",
               "no sequential plan in config.json")
    if len(run.data.tasks_of_kind("alignment")) > 1:  # several behaviors scored: what the vector does to each
        fn, caption = JOINT_PLOTS["off_target"]
        yield "off_target", lambda run: fn(run.data, run.fits), caption, "no alignment items"
    fn, caption, why = CHECKS_PLOT
    for i, task in enumerate(run.helpfulness_tasks):
        name = "diagnostics" if i == 0 else f"diagnostics-{i + 1}"
        yield (name, lambda run, task=task: fn(run, task), caption.format(task=task),
               why.format(task=task))


def _check_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    allowed = {"png", "svg", "pdf"}
    fmts = tuple(dict.fromkeys(str(f).lower().lstrip(".") for f in formats))
    bad = [f for f in fmts if f not in allowed]
    if bad:
        raise ReportError(f"unknown plot format(s) {', '.join(bad)}; use png, svg or pdf")
    return fmts


def _is_joint(run_dir: Path) -> bool:
    from repe_tradeoff.runs import RunFileError, read_run

    try:
        return read_run(run_dir).joint is not None
    except RunFileError:
        return False  # load_run names the problem


def build_report(run_dir: Path | str, *, formats=("png", "svg")) -> Path:
    """Write the report of one run folder and return the path of ``report.html``.

    Writes ``plots/{alignment,helpfulness,tradeoff,diagnostics}.<fmt>`` (those the run has
    data for), ``report.html`` (self-contained), ``summary.md``, ``points.csv`` and
    ``fits.csv`` into ``run_dir``. Raises :class:`ReportError` when the folder has no
    ``points.jsonl``.
    """
    fmts = _check_formats(formats)
    if _is_joint(Path(run_dir)):
        return build_joint_report(Path(run_dir), formats=fmts)
    run = load_run(Path(run_dir))
    plots_dir = run.run_dir / "plots"
    figures: list[Rendered] = []
    missing: list[str] = []
    for name, fn, caption, why in _figures(run):
        with style():
            fig = fn(run)
            if fig is None:
                missing.append(f"No {name} plot: {why}.")
                continue
            figures.append(render(fig, name, plots_dir, fmts, caption))
    tables = write_tables(run, run.run_dir)
    files = [p.relative_to(run.run_dir).as_posix() for r in figures for p in r.files]
    files += [p.name for p in tables] + ["summary.md", "report.html"]
    atomic_write(run.run_dir / "summary.md", summary_md(run, files))
    out = run.run_dir / "report.html"
    atomic_write(out, run_html(run, figures, missing, files))
    return out


def build_comparison_report(run_dirs: dict[str, Path], out_dir: Path,
                            *, formats=("png", "svg")) -> Path:
    """Write a comparison of several run folders (one panel per experiment, shared axes).

    ``run_dirs`` maps an experiment name to its run folder. Writes
    ``plots/comparison_{alignment,helpfulness}.<fmt>`` and ``report.html`` into ``out_dir``
    and returns the path of that ``report.html``. A run folder's own report is linked
    when it exists.
    """
    fmts = _check_formats(formats)
    if not run_dirs:
        raise ReportError("no experiments to compare: give at least one name and run folder")
    runs = {str(name): load_run(Path(d)) for name, d in run_dirs.items()}
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    figures = []
    captions = {
        "alignment": "Alignment against r per experiment: measured points ± standard error "
                     "and the tanh fit from each run's fits.json.",
        "helpfulness": "Helpfulness against r per experiment: the fitted helpfulness metric "
                       "± standard error, the corollary fit and the chance level.",
    }
    for what, caption in captions.items():
        with style():
            fig = plot_comparison(runs, what)
            if fig is not None:
                figures.append(render(fig, f"comparison_{what}", plots_dir, fmts, caption))
    reports = {
        name: (run.run_dir / "report.html") if (run.run_dir / "report.html").exists() else None
        for name, run in runs.items()
    }
    out = out_dir / "report.html"
    atomic_write(out, comparison_html(runs, figures, out_dir, reports))
    return out
