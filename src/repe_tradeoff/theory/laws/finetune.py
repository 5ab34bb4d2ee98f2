r"""The paper's laws and checks on a fine-tuning run, with the representation shift as abscissa.

Against ``s`` = ``shift_norm`` (each checkpoint's items carry it as ``norm``):

* alignment ``E[B](s) = a + b·s`` (the paper's linear regime), slope ``b``;
* helpfulness ``P(s) = p0 − c·s²`` (the paper's quadratic loss, no linear term), coefficient ``c``;

both least squares on the checkpoints' means, with 95 % percentile intervals from a bootstrap
over items (the same resampled items at every checkpoint) and the R² of the fit on the means.
A1 is :func:`check_a1` on ``‖U·δ‖`` (``logit_shift``) against ``s``; A3 is :func:`check_a3` on the
helpfulness items' option scores against ``s`` (step 0 is ``s = 0``). Works on run files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from repe_tradeoff.runs import Curve, read_jsonl, task_items, write_json
from repe_tradeoff.theory.checks.assumptions import check_a1, check_a3
from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.laws.fitting import percentile_ci, r_squared
from repe_tradeoff.theory.laws.replicates import rng_for

FITS_FILE = "finetune_fits.json"


def read_finetune(run_dir: Path) -> tuple[dict, list[dict], dict]:
    """``config.json``, ``shift.jsonl`` (by step) and the items by task of a fine-tuning run."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if config.get("kind") != "finetune":
        raise TheoryError(f"{run_dir} is not a fine-tuning run (its config.json lacks kind: finetune); "
                          "make one with `repe-tradeoff finetune --out FOLDER`")
    if not (run_dir / "shift.jsonl").is_file() or not (run_dir / "items.jsonl").is_file():
        raise TheoryError(f"{run_dir} has no shift.jsonl/items.jsonl yet: rerun the same finetune command to finish it")
    shifts = sorted(read_jsonl(run_dir / "shift.jsonl"), key=lambda s: s["step"])
    return config, shifts, task_items(read_jsonl(run_dir / "items.jsonl"), run_dir / "items.jsonl")


def task_of(items: dict, kind: str, name: str | None = None):
    found = [t for t in items.values() if t.kind == kind and (name is None or t.task == name)]
    if not found:
        raise TheoryError(f"the run scores no {kind} task{f' named {name!r}' if name else ''}")
    return found[0]


def _linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def _quadratic_loss(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``y = p0 − c·x²`` by least squares: (c, p0)."""
    design = np.column_stack([np.ones_like(x), -(x**2)])
    (p0, c), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(c), float(p0)


def _law(name: str, x: np.ndarray, values: np.ndarray, fit, coef: str, const: str, predict, rng,
         n_boot: int) -> dict[str, Any]:
    """Fit ``fit`` to the item means and bootstrap it over items (rows of ``values``)."""
    y = np.nanmean(values, axis=0)
    a, b = fit(x, y)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, values.shape[0], values.shape[0])
        boots.append(fit(x, np.nanmean(values[idx], axis=0)))
    boots = np.asarray(boots)
    return {"law": name, coef: a, f"{coef}_ci": percentile_ci(boots[:, 0]), const: b,
            f"{const}_ci": percentile_ci(boots[:, 1]), "r2": r_squared(y, predict(x, a, b)),
            "n_checkpoints": int(x.size), "n_items": int(values.shape[0]), "ci_method": "bootstrap-items"}


def fit_finetune(run_dir: Path, *, n_boot: int = 200, seed: int = 0, window: float | None = None,
                 write: bool = True) -> dict[str, Any]:
    """The laws against shift_norm (on the checkpoints with ``shift_norm ≤ window`` when given), A1 and
    A3 on all checkpoints; writes ``finetune_fits.json``."""
    config, shifts, items = read_finetune(run_dir)
    align, helpful = task_of(items, "alignment"), task_of(items, "helpfulness")
    out: dict[str, Any] = {"format_version": 1, "abscissa": "shift_norm", "n_boot": n_boot, "seed": seed,
                           "window": window,
                           "checkpoints": [{k: v for k, v in s.items() if k != "logit_shift_items"} for s in shifts]}
    keep_a = align.norms <= (window if window is not None else np.inf) + 1e-12
    keep_h = helpful.norms <= (window if window is not None else np.inf) + 1e-12
    if min(keep_a.sum(), keep_h.sum()) < 3:
        raise TheoryError(f"--window {window} keeps fewer than 3 checkpoints: give a wider window (the shift_norms "
                          f"are {', '.join(f'{s:.4g}' for s in align.norms)})")
    out["alignment"] = {"task": align.task, **_law(
        "linear", align.norms[keep_a], align.values["alignment"][:, keep_a], _linear, "slope", "intercept",
        lambda x, a, b: a * x + b, rng_for(seed, "finetune", "alignment"), n_boot)}
    out["helpfulness"] = {"task": helpful.task, **_law(
        "quadratic", helpful.norms[keep_h], helpful.values["helpfulness"][:, keep_h], _quadratic_loss,
        "quadratic_coefficient", "p0", lambda x, c, p0: p0 - c * x**2, rng_for(seed, "finetune", "helpfulness"),
        n_boot)}
    norms = np.array([s["shift_norm"] for s in shifts])
    logit = np.array([s["logit_shift"] for s in shifts])
    order = np.argsort(norms)
    curve = Curve("shift", "helpfulness", "logit_shift", norms[order], logit[order],
                  np.full(norms.size, np.nan), np.full(norms.size, np.nan))
    out["a1"] = check_a1(curve)
    a3 = check_a3(helpful, rng_for(seed, "finetune", "a3"), n_boot=n_boot)
    out["a3"] = a3 if a3 is not None else {"status": None, "error": "the helpfulness task records no option scores"}
    along = [s.get("shift_along") for s in shifts if s["shift_norm"] > 0 and s.get("shift_along") is not None]
    rel = [s["shift_along"] / s["shift_norm"] for s in shifts if s["shift_norm"] > 0 and s.get("shift_along") is not None]
    out["along_fraction"] = {"median": float(np.median(rel)) if rel else None,
                             "final": rel[-1] if rel else None, "n": len(along)}
    out["model"], out["behavior"] = config.get("model"), config.get("behavior")
    if write:
        write_json(Path(run_dir) / FITS_FILE, _clean(out))
    return _clean(out)


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj
