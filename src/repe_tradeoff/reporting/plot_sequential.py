"""The sequential plan's figure: the measured P(correct) with the response refit on every measured
norm and its 95 % band, the budget line and the bracket the plan stopped in."""

from __future__ import annotations

import json

import numpy as np
from matplotlib.figure import Figure

from repe_tradeoff.reporting._io import RunFiles
from repe_tradeoff.reporting.plots import HELP_LABEL, OKABE_ITO, R_LABEL, _new_figure, _note


def _records(run: RunFiles) -> list[dict]:
    path = run.run_dir / "items.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _means(records: list[dict], task: str, norms) -> dict[float, float]:
    """The measured mean of ``task``'s helpfulness at each of ``norms``."""
    wanted = {f"{float(r):.6g}" for r in norms}
    values: dict[float, list[float]] = {}
    for rec in records:
        if rec.get("task") == task and rec.get("helpfulness") is not None and f"{float(rec['norm']):.6g}" in wanted:
            values.setdefault(float(rec["norm"]), []).append(float(rec["helpfulness"]))
    return {r: float(np.mean(v)) for r, v in sorted(values.items())}


def plot_sequential(run: RunFiles) -> Figure | None:
    from repe_tradeoff.theory.errors import TheoryError
    from repe_tradeoff.theory.response.refit import predict_refit, refit_helpfulness

    plan = run.config.get("sequential")
    if not isinstance(plan, dict) or not plan.get("helpfulness_task"):
        return None
    task = plan["helpfulness_task"]
    fig = _new_figure(7.5, 4.6)
    ax = fig.subplots()
    try:
        records = _records(run)
        refit = refit_helpfulness(records, task, float(plan.get("probe_step") or plan["probe"]),
                                  leave_out=plan.get("broken") or ())
    except TheoryError as err:
        _note(ax, f"no refit: {err}")
        return fig
    grid = np.linspace(float(refit.norms.min()), float(refit.norms.max()), 801)
    pred = predict_refit(refit, grid, n_boot=200)
    measured = predict_refit(refit, refit.norms, n_boot=0).mean  # the refit passes through the measured means
    ax.fill_between(grid, pred.low, pred.high, color=OKABE_ITO["sky"], alpha=0.3, lw=0, label="refit: 95% band over items")
    ax.plot(grid, pred.mean, color=OKABE_ITO["blue"], lw=1.2, label="response refit on the sound measured norms")
    ax.plot(refit.norms, measured, "o", ms=5, color=OKABE_ITO["black"], label=f"measured ({refit.norms.size} norms)")
    broken = _means(records, task, plan.get("broken") or ())
    if broken:
        ax.plot(list(broken), list(broken.values()), "o", ms=5, mfc="none", color=OKABE_ITO["black"],
                label="measured where the model broke (not refit)")
    p0 = float(np.interp(0.0, refit.norms, measured))
    limit = plan.get("budget_limit")
    if limit is not None:
        ax.axhline(p0 - float(limit), color=OKABE_ITO["vermillion"], lw=1, ls="--",
                   label=f"budget: P(0) − {float(limit):.3g}")
    bracket = plan.get("bracket") or [None, None]
    if bracket[1] is not None:
        ax.axvspan(min(bracket), max(bracket), color=OKABE_ITO["orange"], alpha=0.3, lw=0, label="the edge's bracket")
    if plan.get("recommended"):
        ax.axvline(float(plan["recommended"]), color=OKABE_ITO["green"], lw=1, label=f"r* = {float(plan['recommended']):.4g}")
    ax.set_xscale("symlog", linthresh=max(float(plan.get("probe_step") or plan["probe"]) * 4, 1e-9))
    ax.set_xlabel(R_LABEL + " (symmetric log scale)")
    ax.set_ylabel(HELP_LABEL)
    ax.set_title(f"{task}: where the sequential plan measured")
    ax.margins(x=0.06)  # the outermost (broken) norms off the frame
    ax.legend(loc="lower center", frameon=True, framealpha=0.9, fontsize=7.5)
    return fig
