"""The response of a run folder: choose the probe, predict, validate, write.

Both ``predict`` (a run of the probe norms only) and ``fit`` (a full sweep, validated against
its own measured curve) go through :func:`run_response`: it reads ``items.jsonl``, takes the
probe ``0, ±h, ±2h`` out of the run's grid (:func:`choose_probe`), computes every task's
response (:mod:`.response`), writes ``predicted.jsonl`` over the requested norms and returns
one typed block per task (:class:`~repe_tradeoff.runs.schema.HelpfulnessResponseBlock`,
:class:`~repe_tradeoff.runs.schema.AlignmentResponseBlock`).

The default probe is ``h = DEFAULT_PROBE_FRACTION × the mean residual norm`` of the steered
layers. On the embedded model (basic-qa, 48 questions) the saturating curve through that
probe's five norms predicts helpfulness within RMSE 0.002 (blocks 11–18) and 0.005 (blocks
8–15) of the measured curve where it is within 0.15 of r = 0; twice the fraction gives 0.003
and 0.010, as its ±2h then reaches into the fall the curve is meant to extrapolate. On blocks
14–21 a larger probe does better (0.004 at four times the fraction, against 0.027), on blocks
5–12 worse (0.025 against 0.012): no fixed size suits every layer set, and the trust radius
says where the default one stops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from repe_tradeoff.runs import read_item_rows, read_jsonl, write_predicted
from repe_tradeoff.runs.schema import AlignmentResponseBlock, HelpfulnessResponseBlock
from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.response.prediction import (
    _TRUST_SEARCH_STEPS,
    DEFAULT_TOLERANCE,
    AlignmentResponse,
    Estimate,
    HelpfulnessResponse,
    Probe,
    alignment_response,
    helpfulness_response,
    task_kinds,
)
from repe_tradeoff.theory.response.summary import Validation, decompose, predicted_points, validate

#: The default probe h as a fraction of the steered layers' mean residual-stream norm.
DEFAULT_PROBE_FRACTION = 0.0125
#: Helpfulness is compared where the measured curve is at most this far below its r = 0 value.
VALIDATION_MAX_LOSS = 0.15
#: The Prediction check: pass if the helpfulness RMSE over that window is at most PASS, warn
#: if at most WARN, else fail.
RESPONSE_PASS_RMSE = 0.02
RESPONSE_WARN_RMSE = 0.05


def default_probe(residual_norm: float | None, fraction: float = DEFAULT_PROBE_FRACTION) -> float:
    """The default probe size ``h`` for steered layers of mean residual norm ``residual_norm``."""
    if residual_norm is None or not residual_norm > 0 or not math.isfinite(residual_norm):
        raise TheoryError(
            "the vector records no residual norm of its layers, so the probe size cannot be "
            "chosen: give --probe H (in the grid's unit)"
        )
    return float(fraction) * float(residual_norm)


def probe_norms(h: float) -> list[float]:
    """The norms a probe of size ``h`` measures: ``-2h, -h, 0, h, 2h``."""
    if not h > 0 or not math.isfinite(h):
        raise TheoryError(f"the probe size must be a positive number, got {h}")
    return [round(x * h, 9) + 0.0 for x in (-2, -1, 0, 1, 2)]


def choose_probe(norms: Iterable[float], target_h: float | None = None) -> Probe:
    """The probe of a grid: 0 and a symmetric pair ±h, preferring pairs whose ±2h are also
    there (for the trust radius), the one nearest ``target_h`` (default: the smallest)."""
    grid = sorted({float(r) for r in norms})
    scale = max((abs(r) for r in grid), default=1.0) or 1.0

    def has(x: float) -> bool:
        return any(abs(x - r) <= 1e-6 * scale for r in grid)

    if not grid or not has(0.0):
        raise TheoryError("the grid has no norm 0: the response needs 0 and a symmetric pair ±h")
    pairs = [r for r in grid if r > 1e-6 * scale and has(-r)]
    if not pairs:
        raise TheoryError("the grid has no symmetric pair ±h: the response needs 0, +h and -h")
    full = [h for h in pairs if has(2 * h) and has(-2 * h)] or pairs
    h = min(full, key=lambda x: abs(math.log(x / target_h))) if target_h else full[0]
    return Probe(h=h, has_2h=has(2 * h) and has(-2 * h))


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _estimate(e: Estimate) -> dict[str, Any]:
    # a zero r² coefficient leaves the spread share undefined: null, not NaN
    return {"value": _finite(e.value), "ci": [_finite(e.low), _finite(e.high)]}


def _validation(v: Validation, scope: str) -> dict[str, Any]:
    status = None
    if v.metric == "helpfulness" and scope == "loss-window":
        status = ("pass" if v.rmse <= RESPONSE_PASS_RMSE
                  else "warn" if v.rmse <= RESPONSE_WARN_RMSE else "fail")
    return {"metric": v.metric, "scope": scope, "norms": [float(x) for x in v.norms],
            "rmse": v.rmse, "max_error": v.max_error, "window": list(v.window), "status": status}


def _base(resp: HelpfulnessResponse | AlignmentResponse, n_items: int) -> dict[str, Any]:
    has_2h = resp.probe.has_2h
    return {"probe_h": resp.probe.h, "probe_norms": list(resp.probe.norms), "model": resp.model,
            "tolerance": resp.tolerance, "n_items": n_items, "n_dropped": resp.n_dropped,
            "trust_radius": _finite(resp.trust_radius),
            "trust_searched_to": _TRUST_SEARCH_STEPS * resp.probe.h if has_2h else None}


def _has_scores(records: Sequence[Mapping[str, Any]], task: str) -> bool:
    return any("scores" in r for r in records if str(r.get("task") or r.get("kind")) == task)


def task_responses(records: Sequence[Mapping[str, Any]], probe: Probe, tolerance: float,
                   warnings: list[str]) -> list[HelpfulnessResponse | AlignmentResponse]:
    """The response of every task whose records carry what it needs (the others: a warning)."""
    out: list[HelpfulnessResponse | AlignmentResponse] = []
    for task, kind in task_kinds(records).items():
        if kind == "fluency" or (kind == "helpfulness" and not _has_scores(records, task)):
            continue  # nothing to expand: text measures, or free answers without option scores
        build = helpfulness_response if kind == "helpfulness" else alignment_response
        try:
            out.append(build(records, task, probe=probe, tolerance=tolerance))
        except TheoryError as err:
            warnings.append(f"{task}: no response ({err})")
    return out


def response_blocks(responses: Sequence[HelpfulnessResponse | AlignmentResponse],
                    predicted: list[dict[str, Any]], measured: list[dict[str, Any]] | None,
                    *, n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """One response block per task; validated against ``measured`` points when given."""
    helps = [r for r in responses if isinstance(r, HelpfulnessResponse)]
    blocks: dict[str, dict[str, Any]] = {}
    for resp in responses:
        checks: list[dict[str, Any]] = []
        if measured:
            mine = [p for p in predicted if p["task"] == resp.task]
            scope = "loss-window" if isinstance(resp, HelpfulnessResponse) else "all"
            checks = [_validation(v, scope)
                      for v in validate(mine, measured, max_loss=VALIDATION_MAX_LOSS)]
            radius = _finite(resp.trust_radius)
            if radius is not None:  # the same inside the trust radius (helpfulness: the options')
                inside = [p for p in mine if abs(p["norm"]) <= radius]
                checks += [_validation(v, "trust-radius")
                           for v in validate(inside, measured, max_loss=VALIDATION_MAX_LOSS)]
        if isinstance(resp, HelpfulnessResponse):
            dec = decompose(resp, n_boot=max(n_boot, 1), seed=seed)
            status = next((c["status"] for c in checks if c["metric"] == "helpfulness"), None)
            block = HelpfulnessResponseBlock.model_validate({
                **_base(resp, len(resp.answers)), "validation": checks, "status": status,
                "trust_radius_vocab": _finite(resp.trust_radius_vocab),
                "decomposition": {k: _estimate(getattr(dec, k)) for k in (
                    "p0", "linear", "spread", "drift", "quadratic", "spread_share")},
            })
        else:
            dec = decompose(helps[0], resp, n_boot=max(n_boot, 1), seed=seed) if helps else None
            slope = dec.alignment_slope if dec is not None else None
            block = AlignmentResponseBlock.model_validate({
                **_base(resp, len(resp.items)), "validation": checks,
                "slope_at_zero": _estimate(slope) if slope is not None else {"value": None},
            })
        blocks[resp.task] = block.model_dump(mode="json")
    return blocks


def run_response(
    run_dir: Path, *, norms: Iterable[float] | None = None, target_h: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE, n_boot: int = 200, seed: int = 0,
    warnings: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The response of every task of a run folder; writes ``predicted.jsonl`` over ``norms``
    (default: the run's grid) and returns the blocks, validated against ``points.jsonl``
    when the run measured more than the probe norms."""
    run_dir = Path(run_dir)
    warnings = [] if warnings is None else warnings
    if not (run_dir / "items.jsonl").is_file():
        raise TheoryError(f"{run_dir / 'items.jsonl'} not found: the response needs per-item scores")
    records = read_item_rows(run_dir)
    grid = sorted({float(r["norm"]) for r in records})
    probe = choose_probe(grid, target_h)
    responses = task_responses(records, probe, tolerance, warnings)
    if not responses:
        raise TheoryError(f"no task of {run_dir} has what the response needs (see the warnings)")
    targets = sorted(set(grid) | {float(r) for r in (norms or ())})
    predicted = predicted_points(
        targets, helpfulness=[r for r in responses if isinstance(r, HelpfulnessResponse)],
        alignment=[r for r in responses if isinstance(r, AlignmentResponse)],
        n_boot=n_boot, seed=seed)
    write_predicted(run_dir, predicted)
    extra = [r for r in grid if all(abs(r - x) > 1e-9 for x in probe.norms)]
    points = run_dir / "points.jsonl"
    measured = read_jsonl(points) if extra and points.is_file() else None
    return response_blocks(responses, predicted, measured, n_boot=n_boot, seed=seed)


def fit_response(run_dir: Path, config: Any, n_boot: int, seed: int,
                 warnings: list[str]) -> dict[str, dict[str, Any]]:
    """The response blocks ``fit`` puts in fits.json (empty, with a warning, when the run
    cannot give one). The probe is the one ``predict`` recorded in config.json, else the grid's
    pair nearest the default probe size."""
    run_dir = Path(run_dir)
    extra = (config.model_extra or {}) if config is not None else {}
    recorded = extra.get("probe") if isinstance(extra.get("probe"), dict) else {}
    target = recorded.get("h")
    residual = config.norm_scale.residual_norm if config is not None and config.norm_scale else {}
    if target is None and residual:
        target = default_probe(sum(residual.values()) / len(residual))
    norms = recorded.get("predicted_norms") or ()
    try:
        return run_response(run_dir, norms=norms, target_h=target, n_boot=n_boot, seed=seed,
                            warnings=warnings)
    except TheoryError as err:
        warnings.append(f"no response: {err}")
        return {}
