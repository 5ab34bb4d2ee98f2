"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are plain :class:`matplotlib.figure.Figure` objects, so drawing a
report never touches a global backend or an interactive session's state.
Colours are the Okabe–Ito palette (safe for the common colour-vision deficiencies);
series also differ by marker and line style, so the plots read in greyscale.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from repe_tradeoff.report._io import RunFiles
from repe_tradeoff.report.curves import evaluate
from repe_tradeoff.runs import Curve, atomic_write
from repe_tradeoff.runs.schema import FitBlock

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#7F7F7F",
}
R_LABEL = "steering norm r (per-layer L2, hidden-state units)"
ALIGN_LABEL = "alignment E[B] (behavior score, −1 … 1)"
HELP_LABEL = "helpfulness P(correct answer)"

METRIC_STYLE = {
    "helpfulness": {
        "color": OKABE_ITO["blue"], "marker": "o", "label": "P(correct), options-restricted"
    },
    "helpfulness_vocab": {
        "color": OKABE_ITO["orange"], "marker": "s", "label": "P(correct), full vocabulary"
    },
    "accuracy": {"color": OKABE_ITO["green"], "marker": "^", "label": "accuracy (argmax correct)"},
    "helpfulness_norm": {
        "color": OKABE_ITO["purple"], "marker": "D", "label": "P(correct), length-normalised"
    },
    "exact_match": {"color": OKABE_ITO["vermillion"], "marker": "v", "label": "exact match (greedy answer)"},
}

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "repe-tradeoff",
    "svg.fonttype": "path",
}


def plain(text: Any) -> str:
    """A string matplotlib shows literally (no mathtext from a stray ``$``)."""
    return str(text).replace("$", r"\$")


@dataclass
class Rendered:
    """One figure rendered: the PNG bytes (embedded in the HTML) and the files written."""

    name: str
    png: bytes
    files: list[Path]
    caption: str


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def render(fig: Figure, name: str, plots_dir: Path, formats: tuple[str, ...],
           caption: str) -> Rendered:
    """Write ``fig`` as ``plots_dir/name.<fmt>`` for each format (atomically)."""
    files: list[Path] = []
    png = b""
    with style():
        for fmt in dict.fromkeys(("png", *formats)):
            buf = io.BytesIO()
            meta = {"Software": None} if fmt == "png" else {"Date": None} if fmt == "svg" else {}
            fig.savefig(buf, format=fmt, dpi=150 if fmt == "png" else None, metadata=meta)
            data = buf.getvalue()
            if fmt == "png":
                png = data
            if fmt in formats:
                path = plots_dir / f"{name}.{fmt}"
                atomic_write(path, data)
                files.append(path)
    return Rendered(name, png, files, caption)


def style() -> Any:
    """The report's matplotlib style; figures must be created and saved inside it."""
    return mpl.rc_context(RC)


# --------------------------------------------------------------------------- helpers
def _yerr(c: Curve) -> np.ndarray:
    return np.where(np.isfinite(c.stderr), c.stderr, 0.0)


def _grid(lo: float, hi: float, n: int = 400) -> np.ndarray:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    return np.linspace(lo, hi, n)


def _window_grid(fit: FitBlock, lo: float, hi: float) -> np.ndarray:
    if fit.window is not None and fit.window > 0:
        lo, hi = max(lo, -fit.window), min(hi, fit.window)
    return _grid(lo, hi, 200)


def _r2(fit: FitBlock) -> str:
    return f", R² = {fit.r2:.3f}" if fit.r2 is not None else ""


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True,
            fontsize=9, color=OKABE_ITO["grey"])


def _ci_text(ci: list[float | None] | None) -> str:
    if ci is None or None in ci:
        return ""
    return f" [{ci[0]:.3g}, {ci[1]:.3g}]"


# --------------------------------------------------------------------------- regime
def breakdown_decor(ax: Any, run: RunFiles, lo: float, hi: float) -> None:
    """Shade the norms where the model breaks down (fits.json's ``breakdown``), on each side."""
    bd = run.fits.breakdown if run.fits else None
    labelled = False
    for side in (bd.negative, bd.positive) if bd is not None else ():
        if side is None:
            continue
        edge = side.norm if side.last_fluent is None else (side.norm + side.last_fluent) / 2
        span = (lo - 1e-9, edge) if side.norm < 0 else (edge, hi + 1e-9)
        ax.axvspan(*span, color=OKABE_ITO["grey"], alpha=0.18, lw=0, hatch="//",
                   label=None if labelled else "model breaks down (left out of the fits)")
        labelled = True


def regime_decor(ax: Any, run: RunFiles, lo: float, hi: float) -> None:
    """Shade the efficient regime and mark the recommended norm (from fits.json)."""
    breakdown_decor(ax, run, lo, hi)
    er = run.fits.efficient_regime if run.fits else None
    if er is not None and er.end_norm:
        a, b = sorted((0.0, max(lo, min(hi, er.end_norm))))
        ax.axvspan(a, b, color=OKABE_ITO["yellow"], alpha=0.22, lw=0,
                   label=f"efficient regime (|r| ≤ {abs(er.end_norm):.3g}, λ = {er.lam:g})")
    rec = run.fits.recommendation if run.fits else None
    r = rec.norm if rec is not None else None
    if r is not None and r != 0 and lo <= r <= hi:
        ax.axvline(r, color=OKABE_ITO["black"], lw=1.0, ls=(0, (6, 2, 1, 2)),
                   label=f"recommended r = {r:g}")


def _curve(ax: Any, fit: FitBlock | None, rr: np.ndarray, label: str, chance: float = 0.0,
           **style: Any) -> None:
    y = evaluate(fit, rr, chance=chance)
    if y is not None:
        ax.plot(rr, y, label=label, **style)


def draw_prediction(ax: Any, run: RunFiles, task: str | None, metric: str, color: str) -> None:
    """The prediction from the probe norms (predicted.jsonl) with its 95 % band."""
    pts = run.predicted_curve(task, metric)
    if len(pts) < 2:
        return
    r = np.array([p.norm for p in pts])
    ax.fill_between(r, [p.low for p in pts], [p.high for p in pts], color=color, alpha=0.18, lw=0)
    block = run.response_block(task)
    errs = [v for v in (block.validation if block is not None else [])
            if v.metric == metric and v.scope != "trust-radius"]
    err = f", RMSE {errs[0].rmse:.3f}" if errs else ""
    h = f"h = {block.probe_h:.3g}" if block is not None else "0, ±h"
    ax.plot(r, [p.mean for p in pts], color=color, lw=1.8, ls=(0, (3, 1)),
            label=f"predicted from the probe ({h}), 95% band{err}")


# --------------------------------------------------------------------------- alignment
def draw_alignment(ax: Any, run: RunFiles, *, compact: bool = False) -> bool:
    """Alignment points with the tanh fit and the linear fit near 0; False if no data."""
    task = run.alignment_task
    c = run.curve(task, "alignment")
    if c is None:
        _note(ax, "no alignment points in this run")
        return False
    ax.axhline(0, color=OKABE_ITO["grey"], lw=0.6)
    for y in (-1, 1):
        ax.axhline(y, color=OKABE_ITO["grey"], lw=0.6, ls=":")
    ax.errorbar(c.norms, c.mean, yerr=_yerr(c), fmt="o", ms=4, color=OKABE_ITO["blue"],
                ecolor=OKABE_ITO["blue"], elinewidth=1, capsize=2,
                label=f"measured ± stderr ({plain(c.task)})", zorder=3)
    if not compact:
        draw_prediction(ax, run, task, "alignment", OKABE_ITO["green"])
    block = run.fits.alignment_tasks().get(task) if run.fits else None
    lo, hi = float(c.norms.min()), float(c.norms.max())
    if block is not None:
        fits, best = block.fits, block.best
        # On a grid that is not monotone every whole-grid form fits badly, so none is starred
        # and the whole-grid tanh is drawn faintly beside the fit on the monotone range.
        trimmed = block.trimmed

        def star(form: str) -> str:
            return " ★ best" if best == form and not (compact or trimmed) else ""

        tanh = fits.get("tanh")
        if tanh is not None:
            whole = ", whole grid" if trimmed else ""
            _curve(ax, tanh, _grid(lo, hi), f"tanh fit{whole}{_r2(tanh)}{star('tanh')}",
                   color=OKABE_ITO["vermillion"], lw=1.0 if trimmed else 1.8,
                   alpha=0.5 if trimmed else 1.0)
        mono = fits.get("tanh_monotone")
        if trimmed and mono is not None and mono.range and not compact:
            a, b = mono.range
            _curve(ax, mono, _grid(a, b, 300),
                   f"tanh, monotone range [{a:.3g}, {b:.3g}]{_r2(mono)}",
                   color=OKABE_ITO["vermillion"], lw=1.4, ls=(0, (5, 2)))
        lin = fits.get("linear")
        if lin is not None:
            where = f" (|r| ≤ {lin.window:.3g})" if lin.window is not None else ""
            _curve(ax, lin, _window_grid(lin, lo, hi),
                   f"linear fit near 0{where}{_r2(lin)}{star('linear')}",
                   color=OKABE_ITO["black"], lw=1.6, ls="--")
        if best not in (None, "tanh", "linear") and not (compact or trimmed):
            _curve(ax, fits[best], _grid(lo, hi), f"{plain(best)} fit{_r2(fits[best])} ★ best",
                   color=OKABE_ITO["purple"], lw=1.4, ls="-.")
        s0 = block.slope_at_zero
        if s0.value is not None and not compact:
            # a legend line without a handle: the legend finds a place free of data
            ax.plot([], [], " ", label=f"slope at r = 0: {s0.value:.3g}{_ci_text(s0.ci)}")
    if not compact:
        regime_decor(ax, run, lo, hi)
    ax.set_ylim(-1.08, 1.08)
    ax.set_xlabel(R_LABEL)
    ax.set_ylabel(ALIGN_LABEL)
    if compact:
        ax.legend(loc="best", frameon=True, framealpha=0.9)
    else:  # below the axes, where it hides no data
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    return True


def plot_alignment(run: RunFiles) -> Figure | None:
    fig = _new_figure(7.4, 6.0)
    ax = fig.add_subplot()
    if not draw_alignment(ax, run):
        return None
    ax.set_title(f"Alignment vs steering norm — {plain(run.alignment_task)}")
    return fig


# --------------------------------------------------------------------------- helpfulness
def _draw_fits(ax: Any, run: RunFiles, task: str, curves: dict[str, Curve], lo: float,
               hi: float, compact: bool) -> None:
    tf = run.helpfulness_fits(task)
    fitted = run.fitted_curve(task)
    if tf is None or fitted is None:
        return
    fits, best, chance = fitted.fits, fitted.best, fitted.chance
    star = " ★ best" if best == "corollary" and not compact else ""
    cor = fits.get("corollary")
    if cor is not None:
        _curve(ax, cor, _grid(lo, hi), f"corollary fit{_r2(cor)}{star}", chance,
               color=OKABE_ITO["vermillion"], lw=1.8)
    quad = fits.get("quadratic")
    if quad is not None and not compact:
        where = f" (|r| ≤ {quad.window:.3g})" if quad.window is not None else ""
        _curve(ax, quad, _window_grid(quad, lo, hi), f"local quadratic{where}{_r2(quad)}",
               chance, color=OKABE_ITO["black"], lw=1.6, ls="--")
    if best not in (None, "corollary", "quadratic") and not compact:
        _curve(ax, fits[best], _grid(lo, hi),
               f"{plain(best)} fit{_r2(fits[best])} ★ best (lowest AIC)", chance,
               color=OKABE_ITO["purple"], lw=1.4, ls="-.")
    vocab = tf.helpfulness_vocab
    if vocab is not None and vocab is not fitted and "helpfulness_vocab" in curves and not compact:
        vcor = vocab.fits.get("corollary")
        if vcor is not None:
            _curve(ax, vcor, _grid(lo, hi), f"corollary fit, full vocabulary{_r2(vcor)}",
                   vocab.chance, color=OKABE_ITO["orange"], lw=1.4)
    if not compact:
        draw_prediction(ax, run, task, fitted.metric, OKABE_ITO["green"])
    pred = tf.checks.prediction
    if pred is not None and not compact:
        rm = f" (RMSE {pred.rmse:.3f})" if pred.rmse is not None else ""
        ax.plot(pred.norms, pred.predicted, color=OKABE_ITO["sky"], lw=2.0, ls=":",
                marker="x", ms=5, label=f"paper's prediction from A1/A3, no fit{rm}")
        rm = f" (RMSE {pred.rmse_closed_form:.3f})" if pred.rmse_closed_form is not None else ""
        ax.plot(pred.norms, pred.predicted_closed_form, color=OKABE_ITO["sky"], lw=1.2,
                ls=(0, (4, 2)), label=f"paper's closed-form corollary{rm}")


def draw_helpfulness(ax: Any, run: RunFiles, task: str, *, compact: bool = False,
                     primary: bool = True) -> bool:
    """Helpfulness curves of ``task`` with fits, prediction and chance level."""
    curves = {m: run.curve(task, m) for m in ("helpfulness", "helpfulness_vocab", "accuracy", "exact_match")}
    curves = {m: c for m, c in curves.items() if c is not None}
    if not curves:
        extra = run.curve(task, "helpfulness_norm")
        if extra is None:
            _note(ax, f"no helpfulness points for {plain(task)}")
            return False
        curves = {"helpfulness_norm": extra}
    if compact:  # only the fitted metric
        fitted = run.fitted_curve(task)
        metric = fitted.metric if fitted is not None else "helpfulness"
        keep = metric if metric in curves else next(iter(curves))
        curves = {keep: curves[keep]}
    for metric, c in curves.items():
        st = METRIC_STYLE.get(metric, {"color": OKABE_ITO["grey"], "marker": "x",
                                       "label": metric})
        ax.errorbar(c.norms, c.mean, yerr=_yerr(c), fmt=st["marker"], ms=4, color=st["color"],
                    elinewidth=1, capsize=2, label=f"{st['label']} ± stderr", zorder=3,
                    alpha=0.75 if metric == "accuracy" else 1.0)
    all_norms = np.concatenate([c.norms for c in curves.values()])
    lo, hi = float(all_norms.min()), float(all_norms.max())
    _draw_fits(ax, run, task, curves, lo, hi, compact)
    k = None if "exact_match" in curves else run.n_choices(task)  # free answers have no options
    if k:
        ax.axhline(1.0 / k, color=OKABE_ITO["grey"], lw=1, ls=(0, (1, 2)),
                   label=f"chance 1/k = {1.0 / k:.3g} (k = {k})")
    if primary and not compact:
        regime_decor(ax, run, lo, hi)
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlabel(R_LABEL)
    ax.set_ylabel(HELP_LABEL)
    if compact:
        ax.legend(loc="best", frameon=True, framealpha=0.9)
    else:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    return True


def plot_helpfulness(run: RunFiles) -> Figure | None:
    tasks = [t for t in run.helpfulness_tasks if any(run.curve(t, m) for m in METRIC_STYLE)]
    if not tasks:
        return None
    n = len(tasks)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(7.4 * ncols if n > 1 else 7.4, 6.0 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        draw_helpfulness(ax, run, tasks[i], primary=(i == 0))
        ax.set_title(f"Helpfulness vs steering norm — {plain(tasks[i])}")
    return fig


# --------------------------------------------------------------------------- comparison
def plot_comparison(runs: dict[str, RunFiles], what: str) -> Figure | None:
    """One panel per experiment (shared axes) for ``what`` in {"alignment", "helpfulness"}."""
    names = list(runs)
    if not names:
        return None
    n = len(names)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(4.6 * ncols, 3.9 * nrows + 0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    drew = False
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        run = runs[names[i]]
        if what == "alignment":
            ok = draw_alignment(ax, run, compact=True)
        else:
            tasks = run.helpfulness_tasks
            ok = bool(tasks) and draw_helpfulness(ax, run, tasks[0], compact=True)
            if not tasks:
                _note(ax, "no helpfulness points in this run")
        drew = drew or ok
        ax.set_title(plain(names[i]))
        if i % ncols:
            ax.set_ylabel("")
        if i < n - ncols:
            ax.set_xlabel("")
        leg = ax.get_legend()
        if leg is not None:
            for t in leg.get_texts():
                t.set_fontsize(7)
    if not drew:
        return None
    fig.suptitle(f"{what.capitalize()} vs steering norm, by experiment (shared axes)")
    return fig
