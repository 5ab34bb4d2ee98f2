"""The response in words, and the summary of a `predict` run (prediction.md).

Every number comes from the run files (``response.json`` or the ``response`` blocks of
``fits.json``, and ``predicted.jsonl``); nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path

from repe_tradeoff.reporting._io import ReportError
from repe_tradeoff.reporting.content import fmt
from repe_tradeoff.runs import (
    RunFileError,
    atomic_write,
    read_config,
    read_predicted,
    read_response,
)
from repe_tradeoff.runs.schema import (
    AlignmentResponseBlock,
    HelpfulnessResponseBlock,
    PredictedPoint,
    ResponseEstimate,
    ResponseFile,
)
from repe_tradeoff.theory.io.response import VALIDATION_MAX_LOSS
from repe_tradeoff.theory.response.summary import loss_window


def _est(e: ResponseEstimate, digits: int = 3) -> str:
    ci = f" [{fmt(e.ci[0], digits)}, {fmt(e.ci[1], digits)}]" if e.ci and None not in e.ci else ""
    return f"{fmt(e.value, digits)}{ci}"


def _radius(block: HelpfulnessResponseBlock | AlignmentResponseBlock,
            value: float | None = None) -> str:
    value = block.trust_radius if value is None else value
    if value is not None:
        return f"|r| ≤ {fmt(value, 3)}"
    if block.trust_searched_to is not None:
        return f"all |r| ≤ {fmt(block.trust_searched_to, 3)} (as far as it was checked)"
    return "unknown (the probe has no ±2h)"


def _model(response: ResponseFile) -> str:
    """How the blocks' curves were drawn through the probe, in words."""
    names = {"saturating": "the saturating curve through 0, ±h, ±2h",
             "quadratic": "the quadratic through 0, ±h"}
    models = dict.fromkeys(b.model for b in response.tasks.values() if b.model)
    return ", ".join(names[m] for m in models) or "the response curve"


def validation_text(block: HelpfulnessResponseBlock | AlignmentResponseBlock) -> list[str]:
    """One phrase per validation: 'helpfulness RMSE 0.004, max |error| 0.01 over 11 norms ...'."""
    out = []
    for v in block.validation:
        where = {"loss-window": f"where measured helpfulness is within 0.15 of r = 0, "
                                f"r in [{fmt(v.window[0])}, {fmt(v.window[1])}]",
                 "all": "over every measured norm",
                 "trust-radius": "inside the trust radius"}[v.scope]
        out.append(f"{v.metric} RMSE {fmt(v.rmse, 3)}, max |error| {fmt(v.max_error, 3)} over "
                   f"{len(v.norms)} norms {where}")
    return out


def response_lines(task: str, block: HelpfulnessResponseBlock | AlignmentResponseBlock) -> list[str]:
    """What a task's response says, one fact a line."""
    probe = f"probe h = {fmt(block.probe_h, 4)} ({block.n_items} items)"
    if isinstance(block, AlignmentResponseBlock):
        lines = [(f"{task}: alignment slope at r = 0: {_est(block.slope_at_zero)} per unit r "
                 f"(2σ'(Δ0)·Δ'); {probe}; the prediction is trusted for {_radius(block)}")]
    else:
        d = block.decomposition
        lines = [
            (f"{task}: P(correct) at r = 0 {_est(d.p0)}; r coefficient {_est(d.linear)}; "
            f"r² coefficient {_est(d.quadratic)} = spread (A3) {_est(d.spread)} + drift "
            f"{_est(d.drift)}, spread share {_est(d.spread_share, 2)}"),
            (f"{task}: {probe}; the prediction is trusted for {_radius(block)} (options) and "
            f"{_radius(block, block.trust_radius_vocab) if block.trust_radius_vocab else 'n/a'}"
            " (full vocabulary)"),
        ]
    lines += [f"{task}: {t}" for t in validation_text(block)]
    return lines


def _radii(response: ResponseFile) -> dict[tuple[str, str], float]:
    """The trust radius of each predicted (task, metric), where one was found."""
    out: dict[tuple[str, str], float] = {}
    for task, block in response.tasks.items():
        pairs = [(block.kind, block.trust_radius)]
        if isinstance(block, HelpfulnessResponseBlock):
            pairs.append(("helpfulness_vocab", block.trust_radius_vocab))
        out.update({(task, metric): r for metric, r in pairs if r is not None})
    return out


def reach_lines(response: ResponseFile, points: list[PredictedPoint]) -> list[str]:
    """Per helpfulness task: where the prediction keeps P(correct) within the validation loss of
    r = 0, and whether the trust radius covers that window (else: where to measure instead)."""
    out = []
    for task, block in response.tasks.items():
        curve = {p.norm: p.mean for p in points if p.task == task and p.metric == "helpfulness"}
        if not isinstance(block, HelpfulnessResponseBlock) or not curve:
            continue
        window = loss_window(curve, VALIDATION_MAX_LOSS)
        if window is None:  # no r = 0 among the predicted norms
            continue
        lo, hi = window
        line = (f"{task}: predicted P(correct) stays within {VALIDATION_MAX_LOSS:g} of its r = 0 value "
                f"for r in [{fmt(lo)}, {fmt(hi)}]")
        radius = block.trust_radius if block.trust_radius is not None else block.trust_searched_to
        if radius is None:
            out.append(f"{line}; without ±2h the probe gives no trust radius")
        elif max(-lo, hi) <= radius:
            out.append(f"{line}, inside the trust radius ({_radius(block)})")
        else:
            sides = ([(lo, -radius)] if lo < -radius else []) + ([(radius, hi)] if hi > radius else [])
            past = " and ".join(f"[{fmt(a, 3)}, {fmt(b, 3)}]" for a, b in sides)
            out.append(f"{line}; past the trust radius {fmt(radius, 3)} ({past}) it is extrapolated: "
                       "sweep those norms before relying on it")
    return out


def _table(points: list[PredictedPoint], radii: dict[tuple[str, str], float] | None = None) -> list[str]:
    """The predicted curves, a column per task × metric; † past that curve's trust radius."""
    radii = radii or {}
    cols = list(dict.fromkeys((p.task, p.metric) for p in points))
    norms = sorted({p.norm for p in points})
    cell = {(p.task, p.metric, p.norm): p for p in points}
    lines = ["| r | " + " | ".join(f"{t} {m} [95% band]" for t, m in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for r in norms:
        row = []
        for t, m in cols:
            p = cell.get((t, m, r))
            far = " †" if p is not None and abs(r) > radii.get((t, m), float("inf")) else ""
            row.append("—" if p is None else f"{p.mean:.3f} [{p.low:.3f}, {p.high:.3f}]{far}")
        lines.append(f"| {fmt(r)} | " + " | ".join(row) + " |")
    return lines


def build_prediction_summary(run_dir: Path | str) -> Path:
    """Write ``prediction.md`` for a `predict` run folder and return its path."""
    run_dir = Path(run_dir)
    try:
        response = read_response(run_dir)
        points = read_predicted(run_dir)
        config = read_config(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
    except RunFileError as err:
        raise ReportError(str(err)) from None
    if response is None or not points:
        raise ReportError(f"{run_dir} has no response.json and predicted.jsonl: run `repe-tradeoff predict`")
    probe = (config.model_extra or {}).get("probe", {}) if config else {}
    lines = [f"# Predicted tradeoff: {', '.join(response.tasks)}", "",
             f"Model: {config.model if config else 'unknown'} · run folder: {run_dir}", "",
             f"Measured only the probe norms {', '.join(fmt(r) for r in config.norms)}"
             if config else "Measured only the probe norms.",
             (f"(probe h = {fmt(probe.get('h'), 4)}, {probe.get('source', 'recorded')}); predicted "
             f"over {len(response.predicted_norms)} norms from {fmt(min(response.predicted_norms))} "
             f"to {fmt(max(response.predicted_norms))} by each item's response curve "
             f"({_model(response)}; docs/methods.md)."), "", "## Response", ""]
    for task, block in response.tasks.items():
        lines += [f"- {x}" for x in response_lines(task, block)]
    lines += [f"- {x}" for x in reach_lines(response, points)]
    radii = _radii(response)
    lines += ["", "## Predicted curves", "", *_table(points, radii), ""]
    if any(abs(p.norm) > radii.get((p.task, p.metric), float("inf")) for p in points):
        lines += ["† beyond that curve's trust radius: there the probe alone does not decide it.", ""]
    if response.warnings:
        lines += ["## Notes", "", *[f"- {w}" for w in response.warnings], ""]
    if response.command:
        lines += ["## How to reproduce", "", "```", response.command, "```", ""]
    out = run_dir / "prediction.md"
    atomic_write(out, "\n".join(lines))
    return out
