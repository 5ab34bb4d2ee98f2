"""Figures and the page of several behaviors and several vectors (from run files only).

* :func:`plot_off_target`: alignment against r of every behavior scored, one panel per
  vector (the others at 0), the steered behavior marked, the slope at 0 with its CI in the legend.
* :func:`plot_joint_contour`: helpfulness over (r1, r2) of a joint run.
* :func:`plot_joint_frontier`: each behavior's alignment against helpfulness at every grid
  point, the joint frontier (no point better on all at once) highlighted.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from repe_tradeoff.report.plots import Rendered, render, style
from repe_tradeoff.runs import RunData, RunFileError, atomic_write, read_fits, read_run
from repe_tradeoff.runs.schema import FitsFile


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _slope_text(fits: FitsFile | None, vector: str, task: str) -> str:
    row = next((r for r in (fits.off_target if fits else []) if r.vector == vector), None)
    slope = row.slopes.get(task) if row else None
    if slope is None or slope.value is None:
        return ""
    ci = f" [{slope.ci[0]:.3g}, {slope.ci[1]:.3g}]" if slope.ci and None not in slope.ci else ""
    return f", slope {slope.value:.3g}{ci}"


def plot_off_target(data: RunData, fits: FitsFile | None) -> Figure | None:
    """None when the run scores fewer than two behaviors (nothing is off target)."""
    from repe_tradeoff.theory.laws.joint import axis_values, vector_labels

    tasks = data.tasks_of_kind("alignment")
    if len(tasks) < 2:
        return None
    vectors = vector_labels(data)
    fig = _figure(5.0 * len(vectors), 3.6)
    for which, (name, steered) in enumerate(vectors):
        ax = fig.add_subplot(1, len(vectors), which + 1)
        for task in tasks:
            found = axis_values(data, task, "alignment", which)
            if found is None:
                continue
            norms, values = found
            mean = np.nanmean(values, axis=0)
            err = np.nanstd(values, axis=0, ddof=1) / np.sqrt(np.sum(np.isfinite(values), axis=0).clip(1))
            mark = task == steered
            ax.errorbar(norms, mean, yerr=err, marker="o", ms=4 if mark else 3, lw=2.4 if mark else 1.2,
                        capsize=2, label=f"{task}{' (steered)' if mark else ''}{_slope_text(fits, name, task)}")
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set(xlabel=f"r of {name}", ylabel="alignment E[B]", title=f"steered by {name}")
        ax.legend(fontsize=7)
    return fig


def _grid_values(data: RunData, task: str, metric: str = "helpfulness"):
    joint = data.joint
    curve = joint.curves.get((task, metric))
    if curve is None:
        return None
    points = joint.point(curve.norms)
    axes = [np.unique(points[:, j]) for j in range(2)]
    z = np.full((axes[1].size, axes[0].size), np.nan)
    for (r1, r2), m in zip(points, curve.mean):
        z[np.searchsorted(axes[1], r2), np.searchsorted(axes[0], r1)] = m
    return axes, z


def plot_joint_contour(data: RunData, fits: FitsFile | None) -> Figure | None:
    if data.joint is None or data.joint.grid.shape[1] != 2:
        return None
    task = next(iter(data.tasks_of_kind("helpfulness")), None)
    found = None if task is None else _grid_values(data, task)
    if found is None:
        return None
    (x, y), z = found
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot()
    cs = ax.contourf(x, y, z, levels=12, cmap="viridis")
    ax.contour(x, y, z, levels=12, colors="k", linewidths=0.4)
    fig.colorbar(cs, ax=ax, label=f"helpfulness ({task})")
    a, b = data.joint.names[:2]
    surface = fits.joint.surfaces.get(task) if fits and fits.joint else None
    if surface is not None and surface.params:
        wa, wb = surface.window
        ax.add_patch(Rectangle((-wa, -wb), 2 * wa, 2 * wb, fill=False, ls="--", color="w", lw=1.0))
        c12 = surface.params["c12"]
        ci = surface.ci.get("c12") if surface.ci else None
        ax.set_title(f"c12 = {c12:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci and None not in ci else ""))
    ax.set(xlabel=f"r of {a}", ylabel=f"r of {b}")
    return fig


def plot_joint_frontier(data: RunData, fits: FitsFile | None) -> Figure | None:
    if data.joint is None:
        return None
    joint = data.joint
    task = next(iter(data.tasks_of_kind("helpfulness")), None)
    aligns = [t for t in data.tasks_of_kind("alignment") if (t, "alignment") in joint.curves]
    if task is None or (task, "helpfulness") not in joint.curves or not aligns:
        return None
    helpful = joint.curves[(task, "helpfulness")]
    frontier = {tuple(p.norms[n] for n in joint.names) for p in (fits.joint.frontier if fits and fits.joint else [])}
    fig = _figure(4.2 * len(aligns), 3.6)
    for k, t in enumerate(aligns):
        ax = fig.add_subplot(1, len(aligns), k + 1)
        align = joint.curves[(t, "alignment")]
        xs, ys, on = [], [], []
        for idx, h in zip(helpful.norms, helpful.mean):
            a = align.at(idx)
            if a is not None:
                xs.append(a)
                ys.append(h)
                on.append(tuple(joint.grid[int(idx)]) in frontier)
        xs, ys, on = np.array(xs), np.array(ys), np.array(on, dtype=bool)
        ax.scatter(xs[~on], ys[~on], s=10, color="0.7", label="grid points")
        ax.scatter(xs[on], ys[on], s=18, color="C3", label="joint frontier")
        ax.set(xlabel=f"alignment ({t})", ylabel=f"helpfulness ({task})")
        ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- the page
def _table(rows: list[list[str]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _ci(ci) -> str:
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci and None not in ci else "—"


def off_target_table(fits: FitsFile) -> str:
    """The slope matrix (vector × behavior) as an HTML table."""
    tasks = list(dict.fromkeys(t for r in fits.off_target for t in r.slopes))
    rows = [[r.vector + (f" ({r.steered})" if r.steered else "")]
            + [("—" if r.slopes.get(t) is None or r.slopes[t].value is None
                else f"{r.slopes[t].value:.4g} {_ci(r.slopes[t].ci)}") for t in tasks] for r in fits.off_target]
    return _table(rows, ["vector (read for)", *tasks])


def _joint_tables(fits: FitsFile) -> str:
    joint = fits.joint
    parts = []
    for task, s in joint.surfaces.items():
        if s.params is None:
            parts.append(f"<p>{html.escape(task)}: {html.escape(s.error or 'no fit')}</p>")
            continue
        rows = [[t, f"{v:.4g}", _ci((s.ci or {}).get(t))] for t, v in s.params.items()]
        pred = joint.predictions.get(task)
        if pred is not None:
            for name, block in (("corollary", pred.corollary), ("response", pred.response or {})):
                for t, v in block.items():
                    rows.append([f"{t} predicted ({name})", "—" if v is None else f"{v:.4g}", ""])
            rows.append(["ρ (response probe)", "—" if pred.rho is None else f"{pred.rho:.3f}", ""])
        parts.append(f"<h3>{html.escape(task)}: {html.escape(s.formula)} on |r| ≤ {s.window}, "
                     f"{s.n_points} points, R² {s.r2 if s.r2 is None else round(s.r2, 4)}</h3>"
                     + _table(rows, ["term", "estimate", "95% CI"]))
    if joint.cosines:
        rows = [[layer, f"{joint.cosines_before.get(layer, float('nan')):.3f}", f"{c:.3f}"]
                for layer, c in joint.cosines.items()]
        parts.append("<h3>cos(v_A, v_B) per layer</h3>" + _table(rows, ["layer", "read", "as steered"]))
    return "".join(parts)


def _img(r: Rendered) -> str:
    data = base64.b64encode(r.png).decode()
    return f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%"><figcaption>' \
           f"{html.escape(r.caption)}</figcaption></figure>"


JOINT_PLOTS = {
    "joint_contour": (plot_joint_contour, ("Helpfulness over (r1, r2), the fit window dashed, the fitted "
                                           "cross term c12 with its 95% CI.")),
    "joint_frontier": (plot_joint_frontier, ("Each behavior's alignment against helpfulness at every grid "
                                             "point; red: the joint frontier (no point better on helpfulness "
                                             "and every alignment).")),
    "off_target": (plot_off_target, ("Alignment of every behavior scored along each vector (the others at 0); "
                                     "the steered behavior drawn thick; slope at r = 0 with its 95% CI.")),
}


def build_joint_report(run_dir: Path, *, formats=("png", "svg")) -> Path:
    """plots/{joint_contour,joint_frontier,off_target} and report.html of a joint run."""
    data = read_run(Path(run_dir))
    try:
        fits = read_fits(data.run_dir)
    except RunFileError:
        fits = None
    figures = []
    for name, (fn, caption) in JOINT_PLOTS.items():
        with style():
            fig = fn(data, fits)
            if fig is not None:
                figures.append(render(fig, name, data.run_dir / "plots", tuple(formats), caption))
    names = " × ".join(data.joint.names)
    body = [f"<h1>Joint steering: {html.escape(names)}</h1>",
            f"<p>Command: <code>{html.escape((data.config.command if data.config else None) or '—')}</code></p>"]
    body += [_img(r) for r in figures]
    if fits is not None:
        if fits.off_target:
            body.append("<h2>Off-target slopes at r = 0 (alignment per unit r)</h2>" + off_target_table(fits))
        if fits.joint is not None:
            body.append("<h2>The joint helpfulness surface</h2>" + _joint_tables(fits))
        body += [f"<p>warning: {html.escape(w)}</p>" for w in fits.warnings]
    else:
        body.append("<p>fits.json is missing or unreadable: run `repe-tradeoff fit` for the fitted surface.</p>")
    out = data.run_dir / "report.html"
    atomic_write(out, "<!doctype html><meta charset='utf-8'><title>joint steering</title>"
                      "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
                      + "".join(body))
    return out


def joint_answer_lines(fits: FitsFile) -> list[str]:
    """What `fit` prints for a joint run: per helpfulness task the cross term with its CI (do the
    two losses add?), then the off-target slopes."""
    lines = []
    for task, s in (fits.joint.surfaces.items() if fits.joint else []):
        if s.params is None:
            lines.append(f"{task}: no surface fit ({s.error or 'too few points'})")
            continue
        ci = (s.ci or {}).get("c12")
        verdict = ("" if not ci or None in ci else
                   "; 0 is inside the CI: no interaction measured" if ci[0] <= 0 <= ci[1] else
                   "; 0 is outside the CI: the two losses interact")
        lines.append(f"{task}: c12 = {s.params['c12']:.4g} {_ci(ci)} (c1 = {s.params['c1']:.4g}, "
                     f"c2 = {s.params['c2']:.4g}; |r| ≤ {s.window}){verdict}")
    for row in fits.off_target:
        slopes = ", ".join(f"{t} {v.value:.4g} {_ci(v.ci)}" for t, v in row.slopes.items() if v.value is not None)
        lines.append(f"slopes at r = 0 along {row.vector}: {slopes}")
    return lines
