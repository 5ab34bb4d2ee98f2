"""`predict`: measure only the probe norms 0, ±h, ±2h and predict the curves over a whole grid.

The probe is one ordinary sweep (same machinery, same run files) of five norms; the
prediction is :func:`repe_tradeoff.theory.io.response.run_response` on its items. The run
folder gets ``predicted.jsonl`` (over the asked grid), ``response.json`` (the decomposition,
trust radius, alignment slope) and ``prediction.md``.
"""

from __future__ import annotations

from pathlib import Path

from repe_tradeoff.errors import SweepError
from repe_tradeoff.runs import write_response
from repe_tradeoff.runs.processes import process_group
from repe_tradeoff.runs.schema import ResponseFile
from repe_tradeoff.theory.io.response import (
    DEFAULT_PROBE_FRACTION,
    default_probe,
    probe_norms,
    run_response,
)
from repe_tradeoff.theory.response.prediction import DEFAULT_TOLERANCE
from repe_tradeoff.vectors.vector import SteeringVector
from repe_tradeoff.workflows.prepare import norm_grid, prepare_sweep
from repe_tradeoff.workflows.settings import SweepSettings
from repe_tradeoff.workflows.sweep import run_sweep


def probe_plan(settings: SweepSettings, vector: SteeringVector, layers: list[int],
               probe: float | None) -> tuple[list[float], float, dict]:
    """The absolute grid to predict, the absolute probe size h and what config.json records of it.

    ``probe`` is in the grid's unit (``settings.norm_unit``); None picks the default,
    ``DEFAULT_PROBE_FRACTION`` of the steered layers' mean residual norm.
    """
    grid, scale = norm_grid(settings, vector)
    residual = vector.metadata.get("residual_norms", {})
    steered = [residual[str(layer)] for layer in layers if str(layer) in residual]
    if probe is None:
        h = default_probe(sum(steered) / len(steered) if steered else None)
        source = f"default: {DEFAULT_PROBE_FRACTION:g} × the steered layers' mean residual norm"
    else:
        if not probe > 0:
            raise SweepError(f"--probe {probe:g}: the probe size must be a positive number")
        h = float(probe) * scale
        source = "given"
    reach = max(abs(r) for r in grid)
    if reach < 2 * h:
        unit = "" if settings.norm_unit == "absolute" else " (residual units)"
        raise SweepError(
            f"the grid reaches |r| = {reach / scale:g}{unit} but the probe measures ±2h = "
            f"±{2 * h / scale:g}: there is no room to predict beyond the probe: widen --norms or "
            f"give a smaller --probe (at most {reach / scale / 2:g})"
        )
    record = {"h": h, "source": source, "fraction_of_residual": h / (sum(steered) / len(steered))
              if steered else None, "tolerance": DEFAULT_TOLERANCE, "predicted_norms": grid,
              "grid": settings.norms, "grid_unit": settings.norm_unit}
    return grid, h, record


def run_predict(lm, settings: SweepSettings, vector: SteeringVector, layers: list[int], out: Path, *,
                probe: float | None = None, model_name: str, command: str | None = None,
                extra: dict | None = None, tasks=None, n_boot: int = 200, progress=None) -> Path:
    """Sweep the probe norms of ``settings``' grid into ``out`` and predict the whole grid."""
    grid, h, record = probe_plan(settings, vector, layers, probe)
    probe_settings = settings.model_copy(update={"norms": probe_norms(h), "norm_unit": "absolute"})
    plan, config = prepare_sweep(lm, probe_settings, vector, layers, model_name=model_name,
                                 command=command, extra={**(extra or {}), "probe": record}, tasks=tasks)
    run_sweep(lm.model, lm.tokenizer, vector, plan, out, config=config, limit=settings.limit,
              progress=progress)
    if process_group()[1] != 0:
        return Path(out)
    warnings: list[str] = []
    blocks = run_response(out, norms=grid, target_h=h, n_boot=n_boot, warnings=warnings)
    write_response(out, ResponseFile.model_validate(
        {"command": command, "predicted_norms": grid, "tasks": blocks, "warnings": warnings}))
    from repe_tradeoff.report.prediction import build_prediction_summary

    return build_prediction_summary(out)
