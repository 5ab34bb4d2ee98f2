"""The tradeoff figure and the assumption-check figure of one helpfulness task."""

from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from repe_tradeoff.report._io import RunFiles
from repe_tradeoff.report.curves import a3_projections
from repe_tradeoff.report.plots import (
    ALIGN_LABEL,
    HELP_LABEL,
    METRIC_STYLE,
    OKABE_ITO,
    R_LABEL,
    _grid,
    _new_figure,
    _note,
    _yerr,
    plain,
)
from repe_tradeoff.runs import Curve


# --------------------------------------------------------------------------- tradeoff
def _rec_point(run: RunFiles, a: Curve, h: Curve) -> tuple[float, float, float] | None:
    rec = run.fits.recommendation if run.fits else None
    if rec is None or rec.norm is None:
        return None
    x, y = a.at(rec.norm, 1e-6), h.at(rec.norm, 1e-6)
    return None if x is None or y is None else (rec.norm, x, y)


def plot_tradeoff(run: RunFiles) -> Figure | None:
    atask = run.alignment_task
    htasks = run.helpfulness_tasks
    if atask is None or not htasks:
        return None
    fitted = run.fitted_curve(htasks[0])
    metric = fitted.metric if fitted is not None else "helpfulness"
    a = run.curve(atask, "alignment")
    h = run.curve(htasks[0], metric) or run.curve(htasks[0], "helpfulness")
    if a is None or h is None:
        return None
    common = np.intersect1d(np.round(a.norms, 9), np.round(h.norms, 9))
    if common.size == 0:
        return None
    xs = np.array([a.at(r, 1e-6) for r in common], dtype=float)
    ys = np.array([h.at(r, 1e-6) for r in common], dtype=float)
    fig = _new_figure(7.4, 5.2)
    ax = fig.add_subplot()
    lo, hi = float(common.min()), float(common.max())
    norm = TwoSlopeNorm(0.0, lo, hi) if lo < 0 < hi else Normalize(lo, hi)
    cmap = mpl.colormaps["PuOr_r"] if lo < 0 < hi else mpl.colormaps["cividis"]
    ax.plot(xs, ys, color=OKABE_ITO["grey"], lw=0.8, zorder=1)
    sc = ax.scatter(xs, ys, c=common, cmap=cmap, norm=norm, s=38, edgecolors="black",
                    linewidths=0.5, zorder=3)
    cb = fig.colorbar(sc, ax=ax)
    cb.set_label(R_LABEL)
    base = np.nonzero(common == 0.0)[0]
    if base.size:
        ax.scatter(xs[base], ys[base], s=140, facecolors="none", edgecolors="black",
                   linewidths=1.4, zorder=4, label="unsteered (r = 0)")
    pts = sorted((p.alignment, p.helpfulness) for p in run.fits.pareto) if run.fits else []
    if pts:
        px, py = zip(*pts)
        ax.plot(px, py, color=OKABE_ITO["vermillion"], lw=2.0, ls="--", marker="o", ms=3,
                zorder=2, label="Pareto frontier (fits.json)")
    rp = _rec_point(run, a, h)
    if rp is not None:
        r, x, y = rp
        ax.scatter([x], [y], marker="*", s=320, color=OKABE_ITO["yellow"], edgecolors="black",
                   linewidths=1.0, zorder=5, label=f"recommended r = {r:.3g}")
        x0, x1 = ax.get_xlim()
        left = (x - x0) / (x1 - x0) < 0.5 if x1 > x0 else False
        ax.annotate(f"recommended\nr = {r:.3g}", (x, y), xytext=(16 if left else -16, -30),
                    textcoords="offset points", ha="left" if left else "right", fontsize=9,
                    arrowprops={"arrowstyle": "->", "color": "black", "lw": 0.8})
    _baseline_points(ax, run, metric)
    mlabel = METRIC_STYLE.get(metric, {}).get("label", metric)
    ax.set_xlabel(f"{ALIGN_LABEL} — {plain(atask)}")
    ax.set_ylabel(f"{HELP_LABEL}\n{mlabel} — {plain(htasks[0])}")
    ax.set_title("Alignment–helpfulness tradeoff")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", frameon=True, framealpha=0.9)
    return fig


def _baseline_points(ax, run: RunFiles, metric: str) -> None:
    """The prompting baseline (instruction, no steering) and instruction + steering at r*,
    with their 95% intervals, when baseline.json holds the metric the plot shows."""
    b = run.baseline
    if b is None or metric != "helpfulness":
        return
    marks = ((b.row(True, False), "s", OKABE_ITO["green"], "prompting (instruction, r = 0)"),
             (b.row(True, True), "D", OKABE_ITO["blue"], "prompting + steering at r*"))
    for row, marker, color, label in marks:
        if row is None or row.alignment is None or row.helpfulness is None:
            continue
        xerr = yerr = None
        if row.alignment_ci and None not in row.alignment_ci:
            xerr = [[row.alignment - row.alignment_ci[0]], [row.alignment_ci[1] - row.alignment]]
        if row.helpfulness_ci and None not in row.helpfulness_ci:
            yerr = [[row.helpfulness - row.helpfulness_ci[0]],
                    [row.helpfulness_ci[1] - row.helpfulness]]
        ax.errorbar([row.alignment], [row.helpfulness], xerr=xerr, yerr=yerr, fmt=marker, ms=10,
                    color=color, mec="black", mew=1.0, ecolor=color, capsize=3, zorder=6,
                    label=label)


# --------------------------------------------------------------------------- diagnostics
def _pick_norms(norms: list[float], n: int = 4) -> list[float]:
    norms = sorted(norms)
    if len(norms) <= n:
        return norms
    idx = np.unique(np.round(np.linspace(0, len(norms) - 1, n)).astype(int))
    return [norms[i] for i in idx]


def _gauss(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def plot_diagnostics(run: RunFiles, task: str) -> Figure | None:
    """A1 and A3 of one helpfulness task: the logit shift, and the spread of X_i(r)."""
    shift = run.curve(task, "logit_shift")
    xs = a3_projections(run.task_items(task))
    if shift is None and not xs:
        return None
    tf = run.helpfulness_fits(task)
    a1, a3 = (tf.checks.a1, tf.checks.a3) if tf is not None else (None, None)
    fig = _new_figure(12.0, 7.6)
    gs = fig.add_gridspec(2, 4)
    ax_a = fig.add_subplot(gs[0, :2])
    ax_c = fig.add_subplot(gs[0, 2:])

    # (a) A1: mean ||U·δ|| grows linearly in |r|
    ax_a.set_title("(a) A1: logit shift grows linearly in |r|")
    if shift is not None:
        ax_a.errorbar(shift.norms, shift.mean, yerr=_yerr(shift), fmt="o", ms=4,
                      color=OKABE_ITO["blue"], capsize=2, label="mean ‖U·δ_r‖ ± stderr")
        slope = a1.slope if a1 is not None else None
        if slope is not None:
            sat = a1.saturates_at
            lo, hi = float(shift.norms.min()), float(shift.norms.max())
            rr = _grid(lo, hi)
            r2t = f", R² = {a1.r2:.3f}" if a1.r2 is not None else ""
            ax_a.plot(rr, slope * np.abs(rr), color=OKABE_ITO["vermillion"], lw=1.6,
                      label=f"A1 fit {slope:.3g}·|r| (through 0){r2t}")
            if sat is not None:
                for s in (-sat, sat):
                    if lo <= s <= hi:
                        ax_a.axvline(s, color=OKABE_ITO["grey"], ls=":", lw=1)
                ax_a.plot([], [], color=OKABE_ITO["grey"], ls=":",
                          label=f"saturates at |r| ≈ {sat:g}")
        elif a1 is not None and a1.error:
            ax_a.text(0.02, 0.96, "A1 fit failed (see checks)", transform=ax_a.transAxes,
                      va="top", fontsize=8.5, color=OKABE_ITO["vermillion"])
        ax_a.legend(loc="upper center", frameon=True, framealpha=0.9)
    else:
        _note(ax_a, "no logit_shift points (the sweep logs them for helpfulness tasks)")
    ax_a.set_xlabel(R_LABEL)
    ax_a.set_ylabel("mean ‖U·δ_r(q)‖ (logit units)")

    # (c) A3: std of X grows like σ·|r|
    ax_c.set_title("(c) A3: spread of X_i(r) grows like σ·|r|")
    sigma = a3.sigma if a3 is not None else None
    by_norm = {row.norm: row for row in a3.by_norm} if a3 is not None else {}
    sd_norms = sorted(set(xs) | set(by_norm))
    if sd_norms:
        sds = [np.nan if r not in by_norm or by_norm[r].std is None else by_norm[r].std
               for r in sd_norms]
        ax_c.plot(np.abs(sd_norms), sds, "o", ms=4, color=OKABE_ITO["blue"],
                  label="std of X_i(r) at each norm")
        if sigma is not None:
            rr = np.linspace(0, max(abs(v) for v in sd_norms), 100)
            ci = a3.sigma_ci
            ci_txt = ""
            if ci is not None and None not in ci:
                ci_txt = f" [{float(ci[0]):.3g}, {float(ci[1]):.3g}]"
                ax_c.fill_between(rr, float(ci[0]) * rr, float(ci[1]) * rr,
                                  color=OKABE_ITO["vermillion"], alpha=0.15, lw=0)
            ax_c.plot(rr, sigma * rr, color=OKABE_ITO["vermillion"], lw=1.6,
                      label=f"σ·|r|, σ = {sigma:.3g}{ci_txt}")
        ax_c.legend(loc="upper left", frameon=True, framealpha=0.9)
    else:
        _note(ax_c, "no A3 data: items.jsonl with option scores and r = 0 is needed")
    ax_c.set_xlabel("|r| (per-layer L2, hidden-state units)")
    ax_c.set_ylabel("std of X_i(r) (logit units)")

    # (b) histograms of X_i(r) at a few norms
    chosen = _pick_norms([r for r in xs if xs[r].size > 1])
    if not chosen:
        ax = fig.add_subplot(gs[1, :])
        ax.set_axis_off()
        _note(ax, "(b) no A3 projections: items.jsonl with option scores at r = 0 is needed")
    for j, r in enumerate(chosen):
        ax = fig.add_subplot(gs[1, j])
        x = xs[r]
        ax.hist(x, bins=min(30, max(8, int(math.sqrt(x.size)))), density=True,
                color=OKABE_ITO["sky"], edgecolor="white", lw=0.4, label="X_i(r)")
        row = by_norm.get(r)
        mu, sd = (row.mean, row.std) if row is not None else (None, None)
        src = "Gaussian fit"
        if mu is None or sd is None:
            mu, sd, src = float(np.mean(x)), float(np.std(x, ddof=1)), "Gaussian (sample)"
        span = max(float(np.max(np.abs(x))), 3 * sd if sd else 0.0, 1e-6)
        grid = np.linspace(-span, span, 300)
        if sd and sd > 0:
            ax.plot(grid, _gauss(grid, mu, sd), color=OKABE_ITO["vermillion"], lw=1.6,
                    label=f"{src} N({mu:.2g}, {sd:.2g}²)")
        if sigma is not None and sigma * abs(r) > 0:
            ax.plot(grid, _gauss(grid, 0.0, sigma * abs(r)), color=OKABE_ITO["black"], lw=1.2,
                    ls="--", label="A3 law N(0, (σr)²)")
        qq, p = (row.qq_corr, row.normality_p) if row is not None else (None, None)
        stats_txt = ", ".join(
            ([f"QQ corr. {qq:.3f}"] if qq is not None else [])
            + ([f"normality p {p:.2g}"] if p is not None else [])
        )
        ax.set_title(f"(b) r = {r:g}" + (f"\n{stats_txt}" if stats_txt else ""), fontsize=9.5)
        ax.set_xlabel("X_i(r) (logit units)")
        if j == 0:
            ax.set_ylabel("density")
        ax.legend(loc="upper left", fontsize=7, frameon=True, framealpha=0.85)
        ax.set_ylim(top=ax.get_ylim()[1] * 1.45)
    fig.suptitle(f"Assumption checks — {plain(task)}")
    return fig
