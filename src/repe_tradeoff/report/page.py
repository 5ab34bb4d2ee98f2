"""The self-contained HTML report: one file, images as data URIs, no scripts.

Every string that comes from a run file (config, task names, prompts, generations, error
messages from fits.json) goes through :func:`esc`; the page also carries a
Content-Security-Policy that forbids scripts and any request that is not a data URI.
"""

from __future__ import annotations

import base64
import html
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from repe_tradeoff.report._io import RunFiles
from repe_tradeoff.report.answer import prompting_note, prompting_rows
from repe_tradeoff.report.checks import THRESHOLDS_NOTE, check_sentence, checks
from repe_tradeoff.report.content import (
    PAPER_FORMS,
    config_rows,
    fmt,
    fmt_param,
    generation_table,
    grid_sentence,
    law_sections,
    notes,
    recommendation,
    reproduce_commands,
    task_rows,
    title_names,
)
from repe_tradeoff.report.plots import Rendered
from repe_tradeoff.theory.laws.curves import MIN_BEST_R2

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

STYLE = """
:root { --fg:#1b1b1b; --muted:#5a5a5a; --line:#d9d9d9; --bg:#ffffff; --soft:#f4f6f8;
        --pass:#1a7f37; --warn:#9a6700; --fail:#b3261e; --na:#6e7781; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); line-height:1.45;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
                    "Noto Sans", "Liberation Sans", sans-serif; font-size:15px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 22px 0 8px; }
.sub { color: var(--muted); margin: 0 0 18px; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: .9em; }
.rec { border-left: 6px solid var(--accent); background: var(--soft); padding: 14px 18px; border-radius: 4px; }
.rec .headline { font-size: 1.3rem; font-weight: 650; margin: 0; }
.rec.missing { border-left-color: var(--na); }
.rec ul { margin: 8px 0 0; padding-left: 20px; color: var(--muted); }
nav { margin: 14px 0 0; font-size: .92rem; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: .92rem; }
th, td { border: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.mono, td.nowrap { white-space: nowrap; }
tr.best td { background: #eef6ee; }
.scroll { overflow-x: auto; max-width: 100%; }
.problem { color: var(--fail); background: #fdf1f0; border: 1px solid #f3c7c3; padding: 8px 12px; border-radius: 4px; }
.muted { color: var(--muted); }
.badge { display: inline-block; min-width: 52px; text-align: center; padding: 2px 8px; border-radius: 10px;
         font-size: .8rem; font-weight: 700; color: #fff; letter-spacing: .03em; }
.badge.pass { background: var(--pass); } .badge.warn { background: var(--warn); }
.badge.fail { background: var(--fail); } .badge.na { background: var(--na); }
figure { margin: 18px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .9rem; margin-top: 4px; }
.gen td { min-width: 220px; max-width: 420px; }
.gen .text { white-space: pre-wrap; word-break: break-word; }
.gen th.prompt, .gen td.prompt { min-width: 180px; max-width: 260px; background: var(--soft); }
pre.cmd { background: var(--soft); border: 1px solid var(--line); padding: 10px 12px; border-radius: 4px;
          white-space: pre-wrap; word-break: break-all; }
ul.notes li { margin: 2px 0; }
"""


def esc(x: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape(str(x), quote=True)


def _img(r: Rendered, alt: str, rel_to: Path) -> str:
    data = base64.b64encode(r.png).decode("ascii")
    links = []
    for f in r.files:
        try:
            rel = f.relative_to(rel_to).as_posix()
        except ValueError:
            rel = f.name
        links.append(f'<a href="{esc(rel)}">{esc(rel)}</a>')
    files = f" Files: {', '.join(links)}." if links else ""
    size = ""
    if r.png[12:16] == b"IHDR":  # shown at 2/3 of its pixels: sharp on high-density screens
        w, h = struct.unpack(">II", r.png[16:24])
        size = f' width="{round(w / 1.5)}" height="{round(h / 1.5)}"'
    return (
        f'<figure id="fig-{esc(r.name)}"><img src="data:image/png;base64,{data}"{size} '
        f'alt="{esc(alt)}"><figcaption>{esc(r.caption)}{files}</figcaption></figure>'
    )


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table from already-escaped cell HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_) + "</tr>" for rows_ in
                   ([f"<td>{c}</td>" for c in row] for row in rows))
    cls_attr = f' class="{cls}"' if cls else ""
    return f'<div class="scroll"><table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _fit_settings(run: RunFiles) -> str:
    if run.fits is None:
        return ""
    st = run.fits.settings.model_dump(by_alias=True)
    names = {"lambda": "λ", "window": "quadratic window", "align_window": "linear window",
             "n_boot": "bootstrap replicates", "ci_level": "CI level", "seed": "seed",
             "choices": "k (given)"}
    bits = [f"{label} = {fmt(st[key]) if not isinstance(st[key], str) else st[key]}"
            for key, label in names.items() if st.get(key) is not None]
    return f'<p class="muted">Fit settings: {esc(", ".join(bits))}.</p>' if bits else ""


def _laws_html(run: RunFiles) -> str:
    parts = [_fit_settings(run)]
    for sec in law_sections(run):
        parts.append(f"<h3>{esc(sec.title)}</h3>")
        if sec.problem is not None:
            parts.append(f'<p class="problem">{esc(sec.problem)}</p>')
            continue
        if sec.extras:
            parts.append('<p class="muted">' + " · ".join(esc(x) for x in sec.extras) + "</p>")
        if not sec.rows:
            parts.append('<p class="problem">no fits in this block of fits.json</p>')
            continue
        win = sec.winner
        if win is None and any(r.compared for r in sec.rows):
            parts.append(f'<p class="problem">No whole-grid form fits this curve: none reaches '
                         f"R² ≥ {MIN_BEST_R2:g}, so none is marked best.</p>")
        rows = [_law_tr(r, win) for r in sec.rows if r.form in PAPER_FORMS]
        others = [_law_tr(r, win) for r in sec.rows if r.form not in PAPER_FORMS]
        head = "".join(f"<th>{h}</th>" for h in (
            "form", "formula", "parameters [95% CI]", "R²", "AIC", "BIC", "points", "fitted on"))
        methods = sorted({r.ci_method for r in sec.rows if r.ci_method})
        ci_note = (f'<p class="muted">Intervals: {esc(", ".join(methods))}.</p>'
                   if methods else "")
        parts.append('<p class="muted">The paper\'s forms:</p>' if others else "")
        parts.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                     f'<tbody>{"".join(rows)}</tbody></table></div>{ci_note}')
        folded = []
        if others:
            folded.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                          f'<tbody>{"".join(others)}</tbody></table></div>')
        comp = sec.compared
        if len(comp) >= 2:
            crow = []
            for r in comp:
                if r.error is not None:
                    crow.append([esc(r.form), "—", "—", "—", "—", f"failed: {esc(r.error)}"])
                    continue
                crow.append([esc(r.form), fmt(r.aic), fmt(r.bic), fmt(r.delta_aic, 3),
                             fmt(r.delta_bic, 3), "★ winner" if r.form == win else ""])
            folded.append('<p class="muted">Model comparison of the whole-grid fits (lower '
                          "AIC/BIC is better; Δ &gt; 2 is meaningful, Δ &gt; 10 decisive):</p>")
            folded.append(_table(["form", "AIC", "BIC", "ΔAIC", "ΔBIC", ""], crow))
        if folded:
            parts.append(f"<details><summary>Other forms ({len(others)}) and the model "
                         f"comparison</summary>{''.join(folded)}</details>")
    if len(parts) == 1:
        return '<p class="problem">No fitted laws: run `repe-tradeoff fit`.</p>'
    return "\n".join(parts)


def _law_tr(r, win: str | None) -> str:
    """One row of a law table (★: the form fits.json marks best)."""
    cls = ' class="best"' if r.form == win else ""
    name = esc(r.form) + (" <strong>★</strong>" if r.form == win else "")
    formula = f'<span class="mono">{esc(r.formula)}</span>' if r.formula else ""
    if r.error is not None:
        return (f"<tr{cls}><td>{name}</td><td>{formula}</td><td colspan=\"5\" "
                f'class="problem">fit failed: {esc(r.error)}</td>'
                f"<td>{esc(r.fitted_on)}</td></tr>")
    params = "<br>".join(esc(fmt_param(*p)) for p in r.params)
    if r.at_bound:
        params += (f'<br><span class="muted">at a bound: {esc(", ".join(r.at_bound))}'
                   "</span>")
    return (
        f"<tr{cls}><td>{name}</td><td>{formula}</td>"
        f'<td class="mono">{params}</td>'
        f'<td class="num">{fmt(r.r2, 3)}</td><td class="num">{fmt(r.aic)}</td>'
        f'<td class="num">{fmt(r.bic)}</td><td class="num">{fmt(r.n_points)}</td>'
        f'<td class="nowrap">{esc(r.fitted_on)}</td></tr>'
    )


def _checks_html(run: RunFiles) -> str:
    items = []
    for c in checks(run):
        cls = c.status if c.status in ("pass", "warn", "fail") else "na"
        label = c.status.upper() if cls != "na" else "N/A"
        items.append(f'<li><span class="badge {cls}">{esc(label)}</span> {esc(check_sentence(c))}</li>')
    if not items:
        return ('<p class="problem">No assumption checks: they are in fits.json '
                "(run `repe-tradeoff fit`).</p>")
    return (f'<ul class="notes">{"".join(items)}</ul>'
            f'<p class="muted">{esc(THRESHOLDS_NOTE)}</p>')


def _prompting_html(run: RunFiles) -> str:
    rows = prompting_rows(run)
    if not rows:
        return ""
    table = _table(["condition", "alignment E[B] [95% CI]", "helpfulness P(correct) [95% CI]"],
                   [[esc(r.condition), esc(r.alignment), esc(r.helpfulness)] for r in rows])
    return (f'<h3 id="prompting">Steering at r* vs prompting vs both</h3>{table}'
            f'<p class="muted">{esc(prompting_note(run))}</p>')


def _generations_html(run: RunFiles) -> str:
    norms, rows = generation_table(run)
    if not rows:
        return ('<p class="muted">No generations.json in this run (the `demo` and `run` '
                "commands write steered generations).</p>")
    head = ['<th class="prompt">prompt</th>'] + [f"<th>r = {esc(fmt(r))}</th>" for r in norms]
    body = []
    for prompt, cells in rows:
        tds = [f'<td class="prompt"><div class="text">{esc(prompt)}</div></td>']
        for r in norms:
            t = cells.get(r)
            tds.append(f'<td><div class="text">{esc(t)}</div></td>' if t is not None
                       else '<td class="muted">—</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<div class="scroll"><table class="gen"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _config_html(run: RunFiles) -> str:
    rows = config_rows(run)
    tasks = task_rows(run)
    if not rows and not tasks:
        return '<p class="muted">No config.json in this run folder.</p>'
    out = _table(["setting", "value"],
                 [[f'<span class="mono">{esc(k)}</span>', esc(v)] for k, v in rows])
    if tasks:
        out += "<h3>Tasks</h3>" + _table(["task", "kind", "settings"],
                                         [[esc(n), esc(k), esc(d)] for n, k, d in tasks])
    return out


def _reproduce_html(run: RunFiles) -> str:
    cmds, recorded = reproduce_commands(run)
    note = ("The commands recorded in config.json and fits.json:" if recorded else
            "config.json records no command that made this run; the fit and report:")
    return f'<p class="muted">{note}</p><pre class="cmd">{esc(chr(10).join(cmds))}</pre>'


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )


def run_html(run: RunFiles, figures: list[Rendered], missing_figures: list[str],
             files: list[str]) -> str:
    model, behavior, helpful = title_names(run)
    rec = recommendation(run)
    title = f"Steering tradeoff: {behavior} vs {helpful}"
    out = [
        f"<header><h1>{esc(title)}</h1>",
        (
            f'<p class="sub">model <strong>{esc(model)}</strong> · behavior '
            f"<strong>{esc(behavior)}</strong> · helpfulness <strong>{esc(helpful)}</strong> · "
            f"run folder <code>{esc(run.run_dir)}</code></p></header>"
        ),
        (
            f'<section class="rec{"" if rec.ok else " missing"}" id="recommendation">'
            f'<p class="headline">{esc(rec.text)}</p>'
        ),
    ]
    if rec.extras:
        out.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in rec.extras) + "</ul>")
    out.append("</section>")
    out.append(
        '<nav><a href="#plots">plots</a><a href="#why">why</a><a href="#laws">fitted laws</a>'
        '<a href="#generations">generations</a><a href="#reproduce">reproduce</a>'
        '<a href="#config">configuration</a><a href="#files">files</a></nav>'
    )
    # the answer first: the tradeoff, then the curves it is made of
    order = {"tradeoff": 0, "alignment": 1, "helpfulness": 2}
    figs = sorted(figures, key=lambda r: order.get(r.name, 3))
    out.append('<h2 id="plots">The tradeoff</h2>')
    for r in figs[:1]:
        out.append(_img(r, r.caption, run.run_dir))
    out.append(_prompting_html(run))
    grid = grid_sentence(run)
    if grid:
        out.append(f"<p>{esc(grid)}</p>")
    for r in figs[1:]:
        if not r.name.startswith("diagnostics"):
            out.append(_img(r, r.caption, run.run_dir))
    for m in missing_figures:
        out.append(f'<p class="muted">{esc(m)}</p>')
    out.append('<h2 id="why">Why: the assumptions, checked</h2>')
    out.append(_checks_html(run))
    for r in figs[1:]:
        if r.name.startswith("diagnostics"):
            out.append(_img(r, r.caption, run.run_dir))
    n = notes(run)
    if n:
        out.append('<h3 id="notes">What the fit had to assume or could not do</h3><ul class="notes">'
                   + "".join(f"<li>{esc(x)}</li>" for x in n) + "</ul>")
    out.append('<h2 id="laws">Fitted laws</h2>')
    out.append('<p class="muted">95% confidence intervals in brackets. ★ marks the form '
               f"fits.json selects: the lowest AIC among the forms with R² ≥ {MIN_BEST_R2:g}.</p>")
    out.append(_laws_html(run))
    out.append('<h2 id="generations">Steered generations</h2>')
    out.append(_generations_html(run))
    out.append('<h2 id="reproduce">How to reproduce</h2>')
    out.append(_reproduce_html(run))
    out.append('<h2 id="config">Run configuration</h2>')
    out.append(f"<details><summary>config.json of this run</summary>{_config_html(run)}</details>")
    out.append('<h2 id="files">Files</h2><ul>'
               + "".join(f"<li><code>{esc(f)}</code></li>" for f in files) + "</ul>")
    return page(title, "\n".join(out))


def comparison_html(runs: dict[str, RunFiles], figures: list[Rendered], out_dir: Path,
                    reports: dict[str, Path | None]) -> str:
    title = f"Steering tradeoff: comparison of {len(runs)} experiments"
    rows = []
    for name, run in runs.items():
        model, behavior, helpful = title_names(run)
        rec = recommendation(run)
        link = reports.get(name)
        if link is not None:
            rel = Path(os.path.relpath(Path(link).resolve(), out_dir.resolve())).as_posix()
            name_html = f'<a href="{esc(rel)}">{esc(name)}</a>'
        else:
            name_html = esc(name)
        chk = " ".join(
            f'<span class="badge {c.status if c.status in ("pass", "warn", "fail") else "na"}" '
            f'title="{esc(c.task)}: {esc(c.name)}">{esc(c.name.split(" — ")[0])}</span>'
            for c in checks(run)
        )
        rows.append([name_html, esc(model), esc(behavior), esc(helpful), esc(rec.text), chk])
    body = [
        f"<header><h1>{esc(title)}</h1>",
        (
            '<p class="sub">One panel per experiment; the panels of a figure share their '
            "axes.</p></header>"
        ),
        '<h2 id="experiments">Experiments</h2>',
        _table(["experiment", "model", "behavior", "helpfulness", "recommendation", "checks"],
               rows),
        '<h2 id="plots">Plots</h2>',
    ]
    for r in figures:
        body.append(_img(r, r.caption, out_dir))
    if not figures:
        body.append('<p class="problem">No experiment has points to plot.</p>')
    return page(title, "\n".join(body))
