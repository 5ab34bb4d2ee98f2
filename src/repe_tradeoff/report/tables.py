"""summary.md (for pasting into notes) and the flat CSV tables points.csv and fits.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from repe_tradeoff.report._io import RunFiles, _finite
from repe_tradeoff.report.answer import prompting_note, prompting_rows
from repe_tradeoff.report.checks import THRESHOLDS_NOTE, check_sentence, checks
from repe_tradeoff.report.content import (
    PAPER_FORMS,
    config_rows,
    fmt,
    fmt_param,
    law_sections,
    notes,
    recommendation,
    title_names,
)
from repe_tradeoff.runs import atomic_write
from repe_tradeoff.theory.laws.curves import MIN_BEST_R2

POINTS_COLUMNS = ["task", "kind", "metric", "norm", "mean", "stderr", "n"]
FITS_COLUMNS = [
    "block", "task", "form", "best", "param", "value", "ci_low", "ci_high",
    "r2", "aic", "bic", "delta_aic", "n_points", "fitted_on", "ci_method", "error",
]


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def _num(x: Any) -> Any:
    v = _finite(x)
    return "" if v is None else repr(v)


def points_csv(run: RunFiles) -> str:
    rows = []
    for c in run.curves.values():
        for j, r in enumerate(c.norms):
            n = "" if not np.isfinite(c.n[j]) else int(c.n[j])
            rows.append([c.task, c.kind, c.metric, _num(r), _num(c.mean[j]), _num(c.stderr[j]),
                         n])
    return _csv_text(POINTS_COLUMNS, rows)


def fits_csv(run: RunFiles) -> str:
    """One row per fitted parameter (or one row saying why a fit failed)."""
    rows = []
    blank = [""] * (len(FITS_COLUMNS) - 3)
    for sec in law_sections(run):
        if sec.problem is not None:
            rows.append([sec.block_key, sec.task, *blank, sec.problem])
            continue
        for r in sec.rows:
            best = "yes" if r.form == sec.winner else ""
            n = "" if r.n_points is None else int(r.n_points)
            tail = [_num(r.r2), _num(r.aic), _num(r.bic), _num(r.delta_aic), n,
                    r.fitted_on, r.ci_method or ""]
            if r.error is not None:
                rows.append([sec.block_key, sec.task, r.form, best, "", "", "", "", *tail,
                             r.error])
                continue
            for name, value, lo, hi in r.params:
                rows.append([sec.block_key, sec.task, r.form, best, name, _num(value), _num(lo),
                             _num(hi), *tail, ""])
    return _csv_text(FITS_COLUMNS, rows)


def _txt(text: Any) -> str:
    """Text from a run file, inert in Markdown: no raw HTML, newlines flattened."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", " "))


def _md(text: Any) -> str:
    """A table cell: like :func:`_txt`, with pipes escaped."""
    return _txt(text).replace("|", "\\|")


def _law_md(r, win: str | None) -> str:
    name = f"**{r.form}** (best)" if r.form == win else r.form
    if r.error is not None:
        return f"| {_md(name)} | fit failed: {_md(r.error)} | | | | {_md(r.fitted_on)} |"
    params = "; ".join(fmt_param(*p) for p in r.params)
    return (f"| {_md(name)} | {_md(params)} | {fmt(r.r2, 3)} | {fmt(r.aic)} | "
            f"{fmt(r.delta_aic, 3) if r.compared else 'local'} | {_md(r.fitted_on)} |")


LAW_HEAD = ["| form | parameters [95% CI] | R² | AIC | ΔAIC | fitted on |", "|---|---|---|---|---|---|"]


def summary_md(run: RunFiles, files: list[str]) -> str:
    """The report in Markdown, in the page's order: the answer, the plots, why, the laws,
    the configuration (folded)."""
    model, behavior, helpful = title_names(run)
    rec = recommendation(run)
    lines = [
        f"# Steering tradeoff: {_txt(behavior)} vs {_txt(helpful)}",
        "",
        f"Model: {_txt(model)} · run folder: {_txt(run.run_dir)}",
        "",
        "## Recommendation",
        "",
        f"**{_txt(rec.text)}**",
        "",
    ]
    lines += [f"- {_txt(x)}" for x in rec.extras]
    rows = prompting_rows(run)
    if rows:
        lines += ["", "### Steering at r* vs prompting vs both", "",
                  "| condition | alignment E[B] [95% CI] | helpfulness P(correct) [95% CI] |",
                  "|---|---|---|"]
        lines += [f"| {_md(r.condition)} | {_md(r.alignment)} | {_md(r.helpfulness)} |" for r in rows]
        lines += ["", f"_{_txt(prompting_note(run))}_"]
    plots = [f for f in files if f.startswith("plots/") and f.endswith(".png")]
    order = {"plots/tradeoff.png": 0, "plots/alignment.png": 1, "plots/helpfulness.png": 2}
    lines += ["", "## Plots", ""]
    lines += [f"![{Path(f).stem}]({f})" for f in sorted(plots, key=lambda f: order.get(f, 3))]
    responses = {t: b.response for t, b in run.fits.tasks.items() if b.response} if run.fits else {}
    if responses:
        from repe_tradeoff.report.prediction import response_lines

        lines += ["", "## Prediction from the probe norms", ""]
        lines += [f"- {_txt(x)}" for t, b in responses.items() for x in response_lines(t, b)]
    lines += ["", "## Why: the assumptions, checked", ""]
    for c in checks(run):
        lines.append(f"- **{c.status.upper()}** {_txt(check_sentence(c))}")
    lines += ["", f"_{THRESHOLDS_NOTE}_", ""]
    for note in notes(run):
        lines.append(f"- {_txt(note)}")
    lines += ["", "## Fitted laws", "",
              f"_best: the lowest AIC among the whole-grid forms with R² ≥ {MIN_BEST_R2:g}_", ""]
    for sec in law_sections(run):
        lines.append(f"### {_txt(sec.title)}")
        lines.append("")
        if sec.problem is not None:
            lines += [f"_{_txt(sec.problem)}_", ""]
            continue
        lines += [f"- {_txt(x)}" for x in sec.extras]
        if sec.winner is None and any(r.compared for r in sec.rows):
            lines.append(f"- no whole-grid form fits (none reaches R² ≥ {MIN_BEST_R2:g})")
        lines += ["", *LAW_HEAD]
        lines += [_law_md(r, sec.winner) for r in sec.rows if r.form in PAPER_FORMS]
        others = [_law_md(r, sec.winner) for r in sec.rows if r.form not in PAPER_FORMS]
        if others:
            lines += ["", f"<details><summary>Other forms ({len(others)})</summary>", "",
                      *LAW_HEAD, *others, "", "</details>"]
        lines.append("")
    lines += ["## Run configuration", "", "<details><summary>config.json</summary>", ""]
    lines += [f"- `{_md(k)}`: {_md(v)}" for k, v in config_rows(run)]
    lines += ["", "</details>", "", "## Files", ""]
    lines += [f"- `{f}`" for f in files]
    lines.append("")
    return "\n".join(lines)


def write_tables(run: RunFiles, out_dir: Path) -> list[Path]:
    out = []
    for name, text in (("points.csv", points_csv(run)), ("fits.csv", fits_csv(run))):
        atomic_write(out_dir / name, text)
        out.append(out_dir / name)
    return out
