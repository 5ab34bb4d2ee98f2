"""The report of a fine-tuning run: its laws against the shift, A1/A3, and (given a steering run)
both methods and the prompting baseline on one alignment–helpfulness plot, with the comparison
at equal alignment gain. Writes ``plots/finetune.{png,svg}``, ``plots/finetune_tradeoff.{png,svg}``,
``finetune.md`` and ``finetune.html`` (self-contained); needs only the run files."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from repe_tradeoff.reporting.plots import _new_figure, render, style
from repe_tradeoff.runs import atomic_write, read_baseline, read_points
from repe_tradeoff.theory.decisions.finetune import compare_steering
from repe_tradeoff.theory.laws.finetune import FITS_FILE, fit_finetune

COMPARISON_FILE = "finetune_comparison.json"


def _ci(ci) -> str:
    return f" (95% CI {ci[0]:.3g} to {ci[1]:.3g})" if ci else ""


def _g(x, fmt: str = ".4g") -> str:
    return "n/a" if x is None else format(x, fmt)


def _laws_figure(run_dir: Path, fits: dict):
    curves, _ = read_points(run_dir / "points.jsonl", [])
    fig = _new_figure(9.0, 3.4)
    axes = fig.subplots(1, 2)
    for ax, kind, metric in ((axes[0], "alignment", "alignment"), (axes[1], "helpfulness", "helpfulness")):
        block = fits[kind]
        c = curves[(block["task"], metric)]
        ax.errorbar(c.norms, c.mean, yerr=1.96 * np.nan_to_num(c.stderr), fmt="o", ms=4, capsize=2,
                    label="checkpoints (95% CI over items)")
        xx = np.linspace(0, float(np.max(c.norms)), 200)
        if kind == "alignment":
            yy = block["slope"] * xx + block["intercept"]
            label = f"linear, slope {_g(block['slope'], '.3g')}, R² {_g(block['r2'], '.2f')}"
        else:
            yy = block["p0"] - block["quadratic_coefficient"] * xx**2
            label = f"p0 − c·s², c {_g(block['quadratic_coefficient'], '.3g')}, R² {_g(block['r2'], '.2f')}"
        ax.plot(xx, yy, "-", label=label)
        ax.set_xlabel("shift_norm s (mean ‖h_ft − h_base‖ at the layers)")
        ax.set_ylabel("alignment E[B]" if kind == "alignment" else "helpfulness P(correct)")
        ax.legend(fontsize=7)
    return fig


def _tradeoff_figure(comparison: dict, baseline) -> Any:
    fig = _new_figure(5.6, 4.2)
    ax = fig.subplots()
    ft, st = comparison["finetune"]["curve"], comparison["steering"]["curve"]
    ax.plot([p["gain"] for p in ft], [p["loss"] for p in ft], "o-", label="fine-tuning checkpoints (LoRA, DPO)")
    ax.plot([p["gain"] for p in st], [p["loss"] for p in st], "s-", ms=3, label="steering norms r ≥ 0")
    g = comparison["gain"]
    ax.axvline(g, color="grey", ls=":", lw=1, label=f"common gain {g:.3g}")
    for name, marker in (("finetune", "o"), ("steering", "s")):
        block = comparison[name]
        if block["loss"] is not None:
            ci = block["loss_ci"] or [block["loss"], block["loss"]]
            ax.errorbar([g], [block["loss"]], yerr=[[block["loss"] - ci[0]], [ci[1] - block["loss"]]],
                        fmt=marker, color="black", capsize=3)
    if baseline is not None:
        start = baseline.row(False, False)
        prompted = baseline.row(True, False)
        if start and prompted and None not in (start.alignment, prompted.alignment, start.helpfulness,
                                               prompted.helpfulness):
            ax.plot([prompted.alignment - start.alignment], [start.helpfulness - prompted.helpfulness], "*",
                    ms=12, label="prompting baseline (instruction, no steering)")
    ax.set_xlabel("alignment gain (E[B] − E[B] unchanged)")
    ax.set_ylabel("helpfulness loss (P(correct) unchanged − P(correct))")
    ax.legend(fontsize=7)
    return fig


def _summary(fits: dict, comparison: dict | None) -> list[str]:
    a, h, a1, a3 = fits["alignment"], fits["helpfulness"], fits["a1"], fits["a3"]
    cps = fits["checkpoints"]
    lines = [
        f"# Fine-tuning on the steering axes: {fits.get('model')}, {fits.get('behavior')}",
        "",
        f"{len(cps)} checkpoints (steps {', '.join(str(c['step']) for c in cps)}), shift_norm up to "
        f"{max(c['shift_norm'] for c in cps):.4g}.",
        "",
        "| step | shift_norm | shift_along | shift_rest | ‖U·δ‖ |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *[f"| {c['step']} | {c['shift_norm']:.4g} | {c.get('shift_along', float('nan')):.4g} | "
          f"{c.get('shift_rest', float('nan')):.4g} | {c['logit_shift']:.4g} |" for c in cps],
        "",
        f"* Alignment against shift_norm (linear): slope {_g(a['slope'])}{_ci(a['slope_ci'])}, R² {_g(a['r2'], '.3f')}.",
        f"* Helpfulness against shift_norm (p0 − c·s²): c = {_g(h['quadratic_coefficient'])}"
        f"{_ci(h['quadratic_coefficient_ci'])}, p0 {_g(h['p0'])}, R² {_g(h['r2'], '.3f')}.",
        f"* A1 (‖U·δ‖ linear in the shift): {a1.get('status')}; through-origin R² "
        f"{(a1.get('r2') or float('nan')):.3f}, saturates at {a1.get('saturates_at')}.",
        f"* A3 (answer-token projections Gaussian, σ·s): {a3.get('status')}; σ {a3.get('sigma') or float('nan'):.4g}"
        f"{_ci(a3.get('sigma_ci'))}, QQ correlation {a3.get('qq_corr_median') or float('nan'):.3f}, "
        f"|mean|/std {a3.get('mean_over_std_median') or float('nan'):.3f}, σ fit R² "
        f"{a3.get('sigma_fit_r2') or float('nan'):.3f}.",
        f"* Share of the shift along the steering vector (shift_along / shift_norm): median "
        f"{fits['along_fraction']['median'] or float('nan'):.3f}.",
    ]
    if comparison is not None:
        f, s = comparison["finetune"], comparison["steering"]
        lines += [
            "",
            f"## Against steering ({s['run']})",
            "",
            f"At the largest alignment gain both reach, {comparison['gain']:.3g}: fine-tuning loses "
            f"{f['loss']:.4g}{_ci(f['loss_ci'])} of P(correct), steering {s['loss']:.4g}{_ci(s['loss_ci'])}; "
            f"difference (fine-tuning − steering) {comparison['difference']:.4g}{_ci(comparison['difference_ci'])}: "
            f"cheaper: {comparison['cheaper']}.",
            "",
            *[f"* At gain {c['gain']:.3g}: fine-tuning loses {_g(c['finetune'])}{_ci(c['finetune_ci'])}, steering "
              f"{_g(c['steering'])}{_ci(c['steering_ci'])}; difference {_g(c['difference'])}{_ci(c['difference_ci'])}."
              for c in comparison.get("at_smaller_gains", [])],
        ]
    return lines


def build_finetune_report(run_dir: Path | str, against: Path | str | None = None, *, n_boot: int = 200,
                          formats: tuple[str, ...] = ("png", "svg"), strict: bool = True) -> Path:
    """Fit (when not yet fitted), compare with ``against`` (a steering run) and write the report.
    With ``strict=False`` a comparison that cannot be made is reported in ``finetune.md`` instead of raised."""
    from repe_tradeoff.theory.errors import TheoryError

    run_dir = Path(run_dir)
    path = run_dir / FITS_FILE
    fits = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else fit_finetune(run_dir, n_boot=n_boot)
    comparison, why = None, None
    if against is not None:
        try:
            comparison = compare_steering(run_dir, Path(against), n_boot=n_boot)
        except TheoryError as err:
            if strict:
                raise
            why = f"No comparison with the steering run {against}: {err}."
        else:
            atomic_write(run_dir / COMPARISON_FILE, json.dumps(comparison, indent=2, sort_keys=True))
    plots = run_dir / "plots"
    rendered = []
    with style():
        rendered.append(render(_laws_figure(run_dir, fits), "finetune", plots, formats,
                               "Alignment and helpfulness against the representation shift"))
        if comparison is not None:
            fig = _tradeoff_figure(comparison, read_baseline(Path(against)))
            rendered.append(render(fig, "finetune_tradeoff", plots, formats,
                                   "Alignment gain against helpfulness loss: fine-tuning and steering"))
    lines = _summary(fits, comparison) + (["", why] if why else [])
    atomic_write(run_dir / "finetune.md", "\n".join(lines) + "\n")
    body = "".join(f"<figure><img src='data:image/png;base64,{base64.b64encode(r.png).decode()}' "
                   f"alt='{html.escape(r.caption)}'><figcaption>{html.escape(r.caption)}</figcaption></figure>"
                   for r in rendered)
    text = "".join(f"<p>{html.escape(line.lstrip('#* '))}</p>" for line in lines if line and not line.startswith("|"))
    out = run_dir / "finetune.html"
    atomic_write(out, f"<!doctype html><meta charset='utf-8'><title>fine-tuning report</title>{text}{body}")
    return out
