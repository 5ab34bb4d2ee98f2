"""The fluency figure: P(correct), KL(P_0 ‖ P_r) and perplexity against r, side by side, with
the norms where the model breaks down (fits.json's ``breakdown``) shaded in every panel."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from repe_tradeoff.report._io import RunFiles
from repe_tradeoff.report.plots import (
    HELP_LABEL,
    OKABE_ITO,
    R_LABEL,
    _new_figure,
    _note,
    _yerr,
    breakdown_decor,
    plain,
)

_SERIES = ("blue", "orange", "green", "purple")
_MARKERS = ("o", "s", "^", "D")


def _helpfulness_series(run: RunFiles) -> list[tuple[str, str]]:
    """(task, metric) of the P(correct)-like curve of every helpfulness task."""
    out = []
    for task in run.helpfulness_tasks:
        metric = next((m for m in ("helpfulness", "exact_match", "helpfulness_vocab") if run.curve(task, m)), None)
        if metric:
            out.append((task, metric))
    return out


def _draw(ax: Any, run: RunFiles, series: list[tuple[str, str]], label) -> tuple[float, float] | None:
    spans = []
    for i, (task, metric) in enumerate(series):
        c = run.curve(task, metric)
        colour = OKABE_ITO[_SERIES[i % len(_SERIES)]]
        ax.errorbar(c.norms, c.mean, yerr=_yerr(c), fmt=_MARKERS[i % 4] + "-", ms=4, lw=1, color=colour,
                    elinewidth=1, capsize=2, label=label(task, metric))
        spans.append((float(c.norms.min()), float(c.norms.max())))
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


def plot_fluency(run: RunFiles) -> Figure | None:
    fluency = run.tasks("fluency")
    if not fluency:
        return None
    bd = run.fits.breakdown if run.fits else None
    fig = _new_figure(14.0, 4.8)
    axes = fig.subplots(1, 3, sharex=True)
    names = {"helpfulness": "P(correct)", "exact_match": "exact match", "helpfulness_vocab": "P(correct), vocabulary"}
    panels = [
        (_helpfulness_series(run), lambda t, m: f"{plain(t)}: {names[m]}", HELP_LABEL, "Helpfulness"),
        ([(t, "kl") for t in fluency if run.curve(t, "kl")], lambda t, m: plain(t),
         "mean KL(P₀ ‖ P_r) per token (nats)", "Next-token KL on neutral text"),
        ([(t, "perplexity") for t in fluency if run.curve(t, "perplexity")], lambda t, m: plain(t),
         "perplexity under the unsteered model", "Perplexity of steered continuations"),
    ]
    for ax, (series, label, ylabel, title) in zip(axes, panels):
        span = _draw(ax, run, series, label)
        ax.set_title(title)
        ax.set_xlabel(R_LABEL if ax is axes[1] else "r")
        ax.set_ylabel(ylabel)
        if span is None:
            _note(ax, "not measured in this run")
            continue
        if ax is axes[1] and bd is not None:
            ax.axhline(bd.kl_limit, color=OKABE_ITO["vermillion"], lw=1, ls="--",
                       label=f"break-down threshold {bd.kl_limit:g} nats")
        if ax is axes[2]:
            ax.set_yscale("log")
            ref = run.curve(series[0][0], "perplexity").at(0.0)
            if bd is not None and ref:
                ax.axhline(bd.perplexity_factor * ref, color=OKABE_ITO["vermillion"], lw=1, ls="--",
                           label=f"break-down threshold {bd.perplexity_factor:g}× r = 0")
        if ax is axes[0]:
            ax.set_ylim(-0.02, 1.04)
        breakdown_decor(ax, run, *span)
        ax.legend(loc="best", frameon=True, framealpha=0.9, fontsize=7.5)
    return fig
