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
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from ._io import Curve, RunFiles, _finite, atomic_write_bytes, fit_ok
from .curves import a3_projections, evaluate

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
                atomic_write_bytes(path, data)
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


def _window_grid(block: dict[str, Any], lo: float, hi: float) -> np.ndarray:
    w = _finite(block.get("window"))
    if w is not None and w > 0:
        lo, hi = max(lo, -w), min(hi, w)
    return _grid(lo, hi, 200)


def _r2(block: dict[str, Any]) -> str:
    r2 = _finite(block.get("r2"))
    return f", R² = {r2:.3f}" if r2 is not None else ""


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True,
            fontsize=9, color=OKABE_ITO["grey"])


def _best(block: Any) -> str | None:
    best = block.get("best") if isinstance(block, dict) else None
    return best if isinstance(best, str) else None


# --------------------------------------------------------------------------- regime
def _regime_decor(ax: Any, run: RunFiles, lo: float, hi: float) -> None:
    """Shade the efficient regime and mark the recommended norm (from fits.json)."""
    er = run.fits.get("efficient_regime")
    if isinstance(er, dict) and not er.get("error"):
        end = _finite(er.get("end_norm"))
        if end is None:
            mx = _finite(er.get("max_norm"))
            d = _finite(er.get("direction")) or 1.0
            end = None if mx is None else math.copysign(mx, d)
        if end is not None and end != 0:
            a, b = sorted((0.0, max(lo, min(hi, end))))
            lam = _finite(er.get("lambda"))
            lam_txt = f", λ = {lam:g}" if lam is not None else ""
            ax.axvspan(a, b, color=OKABE_ITO["yellow"], alpha=0.22, lw=0,
                       label=f"efficient regime (|r| ≤ {abs(end):.3g}{lam_txt})")
    rec = run.fits.get("recommendation")
    r = _finite(rec.get("norm")) if isinstance(rec, dict) else None
    if r is not None and r != 0 and lo <= r <= hi:
        ax.axvline(r, color=OKABE_ITO["black"], lw=1.0, ls=(0, (6, 2, 1, 2)),
                   label=f"recommended r = {r:g}")


def _curve(ax: Any, form: str, fit: Any, rr: np.ndarray, label: str, **style: Any) -> None:
    y = evaluate(form, fit, rr, k=style.pop("k", None), metric=style.pop("metric", None))
    if y is not None:
        ax.plot(rr, y, label=label, **style)


# --------------------------------------------------------------------------- alignment
def draw_alignment(ax: Any, run: RunFiles, *, compact: bool = False) -> bool:
    """Alignment points with the tanh fit and the linear fit near 0; False if no data."""
    task = run.alignment_task
    c = run.curve(task, "alignment") if task else None
    if c is None:
        _note(ax, "no alignment points in this run")
        return False
    ax.axhline(0, color=OKABE_ITO["grey"], lw=0.6)
    for y in (-1, 1):
        ax.axhline(y, color=OKABE_ITO["grey"], lw=0.6, ls=":")
    ax.errorbar(c.norms, c.mean, yerr=_yerr(c), fmt="o", ms=4, color=OKABE_ITO["blue"],
                ecolor=OKABE_ITO["blue"], elinewidth=1, capsize=2,
                label=f"measured ± stderr ({plain(c.task)})", zorder=3)
    block = run.fits.get("alignment")
    best = _best(block)
    lo, hi = float(c.norms.min()), float(c.norms.max())
    if isinstance(block, dict):
        # On a grid that is not monotone every whole-grid form fits badly, so none is starred
        # and the whole-grid tanh is drawn faintly beside the fit on the monotone range.
        trimmed = bool(block.get("trimmed"))

        def star(form: str) -> str:
            return " ★ best" if best == form and not (compact or trimmed) else ""

        if fit_ok(block.get("tanh")):
            whole = ", whole grid" if trimmed else ""
            _curve(ax, "tanh", block["tanh"], _grid(lo, hi),
                   f"tanh fit{whole}{_r2(block['tanh'])}{star('tanh')}",
                   color=OKABE_ITO["vermillion"], lw=1.0 if trimmed else 1.8, alpha=0.5 if trimmed else 1.0)
        mono = block.get("tanh_monotone")
        if block.get("trimmed") and fit_ok(mono) and not compact:
            span = mono.get("range") or block.get("monotone_range")
            if isinstance(span, list) and len(span) == 2 and None not in map(_finite, span):
                _curve(ax, "tanh", mono, _grid(float(span[0]), float(span[1]), 300),
                       f"tanh, monotone range [{float(span[0]):.3g}, {float(span[1]):.3g}]"
                       f"{_r2(mono)}", color=OKABE_ITO["vermillion"], lw=1.4, ls=(0, (5, 2)))
        lin = block.get("linear")
        if fit_ok(lin):
            w = _finite(lin.get("window"))
            where = f" (|r| ≤ {w:.3g})" if w is not None else ""
            _curve(ax, "linear", lin, _window_grid(lin, lo, hi),
                   f"linear fit near 0{where}{_r2(lin)}{star('linear')}",
                   color=OKABE_ITO["black"], lw=1.6, ls="--")
        if best not in (None, "tanh", "linear") and fit_ok(block.get(best)) and not (compact or trimmed):
            _curve(ax, best, block[best], _grid(lo, hi),
                   f"{plain(best)} fit{_r2(block[best])} ★ best",
                   color=OKABE_ITO["purple"], lw=1.4, ls="-.")
        s0 = block.get("slope_at_zero")
        if isinstance(s0, dict) and _finite(s0.get("value")) is not None and not compact:
            ci = s0.get("ci")
            ci_txt = ""
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(
                _finite(v) is not None for v in ci
            ):
                ci_txt = f" [{float(ci[0]):.3g}, {float(ci[1]):.3g}]"
            # a legend line without a handle: the legend finds a place free of data
            ax.plot([], [], " ",
                    label=f"slope at r = 0: {float(s0['value']):.3g}{ci_txt}")
    if not compact:
        _regime_decor(ax, run, lo, hi)
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
    task = run.alignment_task
    ax.set_title(f"Alignment vs steering norm — {plain(task)}")
    return fig


# --------------------------------------------------------------------------- helpfulness
def _prediction(run: RunFiles, block: Any, primary: bool) -> dict[str, Any] | None:
    diag = block.get("diagnostics") if isinstance(block, dict) else None
    if not isinstance(diag, dict) and primary:
        diag = run.fits.get("diagnostics")
    pred = diag.get("prediction") if isinstance(diag, dict) else None
    return pred if isinstance(pred, dict) and not pred.get("error") else None


def _series(pred: dict[str, Any], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        x = np.asarray(pred.get("norms"), dtype=float)
        y = np.asarray(pred.get(key), dtype=float)
    except (TypeError, ValueError):
        return None
    if x.ndim != 1 or x.shape != y.shape or not x.size:
        return None
    order = np.argsort(x)
    return x[order], y[order]


def draw_helpfulness(ax: Any, run: RunFiles, task: str, *, compact: bool = False,
                     primary: bool = True) -> bool:
    """Helpfulness curves of ``task`` with fits, prediction and chance level."""
    curves = {m: run.curve(task, m) for m in ("helpfulness", "helpfulness_vocab", "accuracy")}
    curves = {m: c for m, c in curves.items() if c is not None}
    if not curves:
        extra = run.curve(task, "helpfulness_norm")
        if extra is None:
            _note(ax, f"no helpfulness points for {plain(task)}")
            return False
        curves = {"helpfulness_norm": extra}
    block = run.helpfulness_block(task)
    fitted_metric = "helpfulness"
    if isinstance(block, dict) and isinstance(block.get("metric"), str):
        fitted_metric = block["metric"]
    if compact:  # only the fitted metric
        keep = fitted_metric if fitted_metric in curves else next(iter(curves))
        curves = {keep: curves[keep]}
    k = run.n_choices(task)
    for metric, c in curves.items():
        st = METRIC_STYLE.get(metric, {"color": OKABE_ITO["grey"], "marker": "x",
                                       "label": metric})
        ax.errorbar(c.norms, c.mean, yerr=_yerr(c), fmt=st["marker"], ms=4, color=st["color"],
                    elinewidth=1, capsize=2, label=f"{st['label']} ± stderr", zorder=3,
                    alpha=0.75 if metric == "accuracy" else 1.0)
    all_norms = np.concatenate([c.norms for c in curves.values()])
    lo, hi = float(all_norms.min()), float(all_norms.max())
    best = _best(block)
    if isinstance(block, dict):
        opts = {"k": k, "metric": fitted_metric}
        cor = block.get("corollary")
        if fit_ok(cor):
            star = " ★ best" if best == "corollary" and not compact else ""
            _curve(ax, "corollary", cor, _grid(lo, hi), f"corollary fit{_r2(cor)}{star}",
                   color=OKABE_ITO["vermillion"], lw=1.8, **opts)
        quad = block.get("quadratic")
        if fit_ok(quad) and not compact:
            w = _finite(quad.get("window"))
            where = f" (|r| ≤ {w:.3g})" if w is not None else ""
            _curve(ax, "quadratic", quad, _window_grid(quad, lo, hi),
                   f"local quadratic{where}{_r2(quad)}", color=OKABE_ITO["black"], lw=1.6,
                   ls="--", **opts)
        if best not in (None, "corollary", "quadratic") and fit_ok(block.get(best)) and (
            not compact
        ):
            _curve(ax, best, block[best], _grid(lo, hi),
                   f"{plain(best)} fit{_r2(block[best])} ★ best (lowest AIC)",
                   color=OKABE_ITO["purple"], lw=1.4, ls="-.", **opts)
        vocab = block.get("helpfulness_vocab")
        if vocab is None and primary:
            vocab = run.fits.get("helpfulness_vocab")
        if "helpfulness_vocab" in curves and isinstance(vocab, dict) and fit_ok(
            vocab.get("corollary")
        ) and not compact:
            _curve(ax, "corollary", vocab["corollary"], _grid(lo, hi),
                   f"corollary fit, full vocabulary{_r2(vocab['corollary'])}",
                   color=OKABE_ITO["orange"], lw=1.4, metric="helpfulness_vocab")
    pred = _prediction(run, block, primary) if not compact else None
    if pred is not None:
        mc = _series(pred, "predicted")
        if mc is not None:
            rmse = _finite(pred.get("rmse"))
            rm = f" (RMSE {rmse:.3f})" if rmse is not None else ""
            ax.plot(*mc, color=OKABE_ITO["sky"], lw=2.0, ls=":", marker="x", ms=5,
                    label=f"predicted from A1/A3, no fit{rm}")
        cf = _series(pred, "predicted_closed_form")
        if cf is not None:
            rmse = _finite(pred.get("rmse_closed_form"))
            rm = f" (RMSE {rmse:.3f})" if rmse is not None else ""
            ax.plot(*cf, color=OKABE_ITO["sky"], lw=1.2, ls=(0, (4, 2)),
                    label=f"predicted, closed-form corollary{rm}")
    if k:
        ax.axhline(1.0 / k, color=OKABE_ITO["grey"], lw=1, ls=(0, (1, 2)),
                   label=f"chance 1/k = {1.0 / k:.3g} (k = {k})")
    if primary and not compact:
        _regime_decor(ax, run, lo, hi)
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlabel(R_LABEL)
    ax.set_ylabel(HELP_LABEL)
    if compact:
        ax.legend(loc="best", frameon=True, framealpha=0.9)
    else:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    return True


def plot_helpfulness(run: RunFiles) -> Figure | None:
    tasks = run.helpfulness_tasks
    tasks = [t for t in tasks if any(run.curve(t, m) for m in METRIC_STYLE)]
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


# --------------------------------------------------------------------------- tradeoff
def _rec_point(run: RunFiles, a: Curve, h: Curve) -> tuple[float, float, float] | None:
    rec = run.fits.get("recommendation")
    if not isinstance(rec, dict):
        return None
    r = _finite(rec.get("norm"))
    if r is None:
        return None
    pareto = run.fits.get("pareto")
    for p in pareto if isinstance(pareto, list) else []:
        if isinstance(p, dict) and _finite(p.get("norm")) == r:
            x, y = _finite(p.get("alignment")), _finite(p.get("helpfulness"))
            if x is not None and y is not None:
                return r, x, y
    x, y = a.at(r, 1e-6), h.at(r, 1e-6)
    if x is not None and y is not None:
        return r, x, y
    a0, h0 = a.at(0.0), h.at(0.0)
    ga, gh = _finite(rec.get("alignment_gain")), _finite(rec.get("helpfulness_change"))
    if None not in (a0, h0, ga, gh):
        return r, a0 + ga, h0 + gh  # type: ignore[operator]
    return None


def plot_tradeoff(run: RunFiles) -> Figure | None:
    atask = run.alignment_task
    htasks = run.helpfulness_tasks
    if atask is None or not htasks:
        return None
    hblock = run.helpfulness_block(htasks[0])
    metric = "helpfulness"
    if isinstance(hblock, dict) and isinstance(hblock.get("metric"), str):
        metric = hblock["metric"]
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
    pareto = run.fits.get("pareto")
    if isinstance(pareto, list):
        pts = [(_finite(p.get("alignment")), _finite(p.get("helpfulness")))
               for p in pareto if isinstance(p, dict)]
        pts = sorted((x, y) for x, y in pts if x is not None and y is not None)
        if pts:
            px, py = zip(*pts)
            ax.plot(px, py, color=OKABE_ITO["vermillion"], lw=2.0, ls="--", marker="o", ms=3,
                    zorder=2, label="Pareto frontier (fits.json)")
    rp = _rec_point(run, a, h)
    if rp is not None:
        r, x, y = rp
        ax.scatter([x], [y], marker="*", s=320, color=OKABE_ITO["yellow"], edgecolors="black",
                   linewidths=1.0, zorder=5, label=f"recommended r = {r:g}")
        x0, x1 = ax.get_xlim()
        left = (x - x0) / (x1 - x0) < 0.5 if x1 > x0 else False
        ax.annotate(f"recommended\nr = {r:g}", (x, y), xytext=(16 if left else -16, -30),
                    textcoords="offset points", ha="left" if left else "right", fontsize=9,
                    arrowprops={"arrowstyle": "->", "color": "black", "lw": 0.8})
    mlabel = METRIC_STYLE.get(metric, {}).get("label", metric)
    ax.set_xlabel(f"{ALIGN_LABEL} — {plain(atask)}")
    ax.set_ylabel(f"{HELP_LABEL}\n{mlabel} — {plain(htasks[0])}")
    ax.set_title("Alignment–helpfulness tradeoff")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", frameon=True, framealpha=0.9)
    return fig


# --------------------------------------------------------------------------- diagnostics
def _pick_norms(norms: list[float], n: int = 4) -> list[float]:
    norms = sorted(norms)
    if len(norms) <= n:
        return norms
    idx = np.unique(np.round(np.linspace(0, len(norms) - 1, n)).astype(int))
    return [norms[i] for i in idx]


def _gauss(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def plot_diagnostics(run: RunFiles) -> Figure | None:
    htasks = run.helpfulness_tasks
    task = htasks[0] if htasks else None
    shift = run.curve(task, "logit_shift") if task else None
    xs = a3_projections(run.task_items(task))
    if shift is None and not xs:
        return None
    diag = run.fits.get("diagnostics") if isinstance(run.fits.get("diagnostics"), dict) else {}
    a1, a3 = diag.get("a1"), diag.get("a3")
    fig = _new_figure(12.0, 7.6)
    gs = fig.add_gridspec(2, 4)
    ax_a = fig.add_subplot(gs[0, :2])
    ax_c = fig.add_subplot(gs[0, 2:])

    # (a) A1: mean ||U·δ|| grows linearly in |r|
    ax_a.set_title("(a) A1: logit shift grows linearly in |r|")
    if shift is not None:
        ax_a.errorbar(shift.norms, shift.mean, yerr=_yerr(shift), fmt="o", ms=4,
                      color=OKABE_ITO["blue"], capsize=2, label="mean ‖U·δ_r‖ ± stderr")
        slope = _finite(a1.get("slope")) if isinstance(a1, dict) else None
        if slope is not None and not a1.get("error"):
            sat = _finite(a1.get("saturates_at"))
            lo, hi = float(shift.norms.min()), float(shift.norms.max())
            rr = _grid(lo, hi)
            r2 = _finite(a1.get("r2"))
            r2t = f", R² = {r2:.3f}" if r2 is not None else ""
            ax_a.plot(rr, slope * np.abs(rr), color=OKABE_ITO["vermillion"], lw=1.6,
                      label=f"A1 fit {slope:.3g}·|r| (through 0){r2t}")
            if sat is not None:
                for s in (-sat, sat):
                    if lo <= s <= hi:
                        ax_a.axvline(s, color=OKABE_ITO["grey"], ls=":", lw=1)
                ax_a.plot([], [], color=OKABE_ITO["grey"], ls=":",
                          label=f"saturates at |r| ≈ {sat:g}")
        elif isinstance(a1, dict) and a1.get("error"):
            ax_a.text(0.02, 0.96, "A1 fit failed (see checks)", transform=ax_a.transAxes,
                      va="top", fontsize=8.5, color=OKABE_ITO["vermillion"])
        ax_a.legend(loc="upper center", frameon=True, framealpha=0.9)
    else:
        _note(ax_a, "no logit_shift points (the sweep logs them for helpfulness tasks)")
    ax_a.set_xlabel(R_LABEL)
    ax_a.set_ylabel("mean ‖U·δ_r(q)‖ (logit units)")

    # (c) A3: std of X grows like σ·|r|
    ax_c.set_title("(c) A3: spread of X_i(r) grows like σ·|r|")
    sigma = _finite(a3.get("sigma")) if isinstance(a3, dict) and not a3.get("error") else None
    by_norm: dict[float, dict[str, Any]] = {}
    if isinstance(a3, dict) and isinstance(a3.get("by_norm"), list):
        for row in a3["by_norm"]:
            if isinstance(row, dict) and _finite(row.get("norm")) is not None:
                by_norm[float(row["norm"])] = row
    sd_norms = sorted(set(xs) | set(by_norm))
    if sd_norms:
        sds = []
        for r in sd_norms:
            sd = _finite(by_norm.get(r, {}).get("std"))
            if sd is None and r in xs and xs[r].size > 1:
                sd = float(np.std(xs[r], ddof=1))
            sds.append(np.nan if sd is None else sd)
        ax_c.plot(np.abs(sd_norms), sds, "o", ms=4, color=OKABE_ITO["blue"],
                  label="std of X_i(r) at each norm")
        if sigma is not None:
            rr = np.linspace(0, max(abs(v) for v in sd_norms), 100)
            ci = a3.get("sigma_ci")
            ci_txt = ""
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in map(_finite, ci):
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
        row = by_norm.get(r, {})
        mu, sd = _finite(row.get("mean")), _finite(row.get("std"))
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
        qq, p = _finite(row.get("qq_corr")), _finite(row.get("normality_p"))
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
    fig.suptitle(f"Assumption checks — {plain(task)}" if task else "Assumption checks")
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
