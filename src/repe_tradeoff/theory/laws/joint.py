"""Several behaviors and several vectors: off-target slopes, the joint helpfulness surface.

* **Off-target slopes** (one-vector and joint runs): for every vector and every behavior
  scored, the slope of alignment at r = 0 along that vector (the others at 0), from a linear
  fit on the smallest window ``|r| ≤ w`` holding 5 norms, with a bootstrap over items.
* **The joint surface** (joint runs): helpfulness near the origin fitted as
  ``h0 + b1 r1 + b2 r2 + c1 r1² + c2 r2² + c12 r1 r2`` (least squares on the grid points
  inside the window, CIs from a bootstrap over questions). ``c12 = 0`` means the two vectors'
  helpfulness losses add.
* **The prediction** from the probes ``(±h, 0)``, ``(0, ±h)``: per question the first-order
  score change of each vector ``g_A``, ``g_B``; the corollary extended to two vectors
  (``σ² r² → σ1² r1² + σ2² r2² + 2ρσ1σ2 r1 r2``, with ``X_i = g_i − g_c`` pooled over wrong
  options) gives ``c1 = −w σ1²/2``, ``c2 = −w σ2²/2``, ``c12 = −w ρ σ1 σ2`` with
  ``w = mean p0(1 − p0)``; the second-order response (spread + drift, with the mixed
  derivative from ``(±h, ±h)``) gives the same coefficients without the Gaussian assumption.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repe_tradeoff.runs import JointRun, RunData, TaskItems
from repe_tradeoff.theory.laws.fitting import percentile_ci
from repe_tradeoff.theory.laws.replicates import rng_for

SURFACE_TERMS = ("h0", "b1", "b2", "c1", "c2", "c12")
SURFACE_FORMULA = "h0 + b1*r1 + b2*r2 + c1*r1^2 + c2*r2^2 + c12*r1*r2"
SLOPE_NORMS = 5  # the slope window holds this many norms of the axis


def _design(r: np.ndarray) -> np.ndarray:
    r1, r2 = r[:, 0], r[:, 1]
    return np.column_stack([np.ones_like(r1), r1, r2, r1**2, r2**2, r1 * r2])


def fit_surface(points: np.ndarray, values: np.ndarray, *, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """Fit the quadratic surface to per-item values ``(n_items, n_points)`` at ``points``
    ``(n_points, 2)``: the estimate from the item means, CIs from resampling items."""
    points = np.asarray(points, dtype=float)
    values = np.asarray(values, dtype=float)
    x = _design(points)
    if points.shape[0] < len(SURFACE_TERMS) or np.linalg.matrix_rank(x) < len(SURFACE_TERMS):
        return {"params": None, "error": f"{points.shape[0]} grid points do not determine the 6 terms "
                                         "(need at least 3 norms per vector inside the window)"}
    mean = np.nanmean(values, axis=0)
    coef = np.linalg.lstsq(x, mean, rcond=None)[0]
    resid = mean - x @ coef
    total = float(((mean - mean.mean()) ** 2).sum())
    out: dict[str, Any] = {"params": dict(zip(SURFACE_TERMS, map(float, coef))), "n_points": int(points.shape[0]),
                           "r2": 1.0 - float((resid**2).sum()) / total if total > 0 else None}
    n = values.shape[0]
    if n_boot > 0 and n > 1:
        rng = rng_for(seed, "surface")
        reps = np.array([np.linalg.lstsq(x, np.nanmean(values[rng.integers(0, n, n)], axis=0), rcond=None)[0]
                         for _ in range(n_boot)])
        out.update(ci={t: percentile_ci(reps[:, i]) for i, t in enumerate(SURFACE_TERMS)},
                   ci_method="bootstrap-items", n_boot=int(n_boot))
    return out


def _window_holding(norms: np.ndarray, count: int) -> float:
    """The smallest w with at least ``count`` of ``norms`` (or all of them) in |r| ≤ w."""
    a = np.sort(np.abs(norms))
    return float(a[min(count, a.size) - 1]) if a.size else 0.0


def local_slope(norms: np.ndarray, values: np.ndarray, *, n_boot: int, seed: int, label: str) -> dict[str, Any]:
    """Slope at r = 0 of per-item values ``(n_items, n_norms)`` from a line on the window that
    holds :data:`SLOPE_NORMS` norms; percentile CI over resampled items."""
    w = _window_holding(norms, SLOPE_NORMS)
    inside = np.abs(norms) <= w + 1e-12
    r, v = norms[inside], values[:, inside]
    if np.unique(r).size < 2:
        return {"value": None, "error": "fewer than 2 norms on this vector's axis", "window": w}
    out: dict[str, Any] = {"value": float(np.polyfit(r, np.nanmean(v, axis=0), 1)[0]), "model": "linear",
                           "window": w}
    n = v.shape[0]
    if n_boot > 0 and n > 1:
        rng = rng_for(seed, "off-target", label)
        reps = [np.polyfit(r, np.nanmean(v[rng.integers(0, n, n)], axis=0), 1)[0] for _ in range(n_boot)]
        out.update(ci=percentile_ci(reps), ci_method="bootstrap-items")
    return out


def _axis(joint: JointRun, items: TaskItems, which: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of ``items`` on vector ``which``'s axis (every other norm 0): (norms, columns)."""
    grid = joint.point(items.norms)
    others = np.delete(grid, which, axis=1)
    on = np.flatnonzero(np.all(others == 0.0, axis=1))
    order = on[np.argsort(grid[on, which])]
    return grid[order, which], order


def axis_values(run: RunData, task: str, metric: str, which: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(norms, per-item values) of ``task``'s ``metric`` along vector ``which`` (others at 0)."""
    if run.joint is None:
        items = run.items.get(task)
        return None if items is None or metric not in items.values else (items.norms, items.values[metric])
    items = run.joint.items.get(task)
    if items is None or metric not in items.values:
        return None
    norms, cols = _axis(run.joint, items, which)
    return norms, items.values[metric][:, cols]


def vector_labels(run: RunData) -> list[tuple[str, str | None]]:
    """(name, behavior it was read for) of each vector of the run, in order."""
    cfg = run.config
    if cfg is not None and cfg.vectors:
        return [(v.name, v.behavior) for v in cfg.vectors]
    if run.joint is not None:
        return [(name, None) for name in run.joint.names]
    extra = (cfg.model_extra or {}) if cfg is not None else {}
    path = extra.get("vector_path")
    name = path.rsplit("/", 1)[-1].removesuffix(".safetensors") if path else "vector"
    steered = (cfg.steered_behavior if cfg else None) or extra.get("behavior") or (cfg.vector.behavior if cfg and cfg.vector else None)
    return [(name, steered)]


def off_target(run: RunData, *, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """One row per vector: the slope at r = 0 of every alignment task scored."""
    tasks = run.tasks_of_kind("alignment")
    rows = []
    for which, (name, steered) in enumerate(vector_labels(run)):
        slopes, window = {}, None
        for task in tasks:
            found = axis_values(run, task, "alignment", which)
            if found is None:
                continue
            slope = local_slope(*found, n_boot=n_boot, seed=seed, label=f"{name}/{task}")
            window = slope.pop("window")
            slopes[task] = slope
        if slopes:
            rows.append({"vector": name, "steered": steered, "slopes": slopes, "window": window})
    return rows


# --------------------------------------------------------------------------- the joint surface
def _surface_window(grid: np.ndarray, window: float) -> list[float]:
    """Per vector: ``window`` when 3 norms of the axis lie inside it, else the smallest holding 5."""
    out = []
    for j in range(grid.shape[1]):
        axis = np.unique(grid[:, j])
        out.append(float(window) if (np.abs(axis) <= window + 1e-12).sum() >= 3 else _window_holding(axis, 5))
    return out


def _probe(axis_norms: np.ndarray) -> float | None:
    """The smallest h > 0 with both ±h on the axis."""
    pos = sorted(r for r in axis_norms if r > 0 and np.any(np.isclose(axis_norms, -r)))
    return float(pos[0]) if pos else None


def _col(joint: JointRun, items: TaskItems, point: tuple[float, ...]) -> int | None:
    grid = joint.point(items.norms)
    hit = np.flatnonzero(np.all(np.isclose(grid, point, atol=1e-9), axis=1))
    return int(hit[0]) if hit.size else None


def predict_joint(joint: JointRun, items: TaskItems) -> dict[str, Any] | None:
    """The corollary and the second-order response for two vectors (see the module notes)."""
    if items.scores is None or joint.grid.shape[1] != 2:
        return None
    h = [_probe(np.unique(joint.grid[:, j])) for j in range(2)]
    if None in h:
        return None
    h1, h2 = h
    at = {p: _col(joint, items, p) for p in [(0.0, 0.0), (h1, 0.0), (-h1, 0.0), (0.0, h2), (0.0, -h2),
                                              (h1, h2), (h1, -h2), (-h1, h2), (-h1, -h2)]}
    if any(at[p] is None for p in list(at)[:5]):
        return None
    mixed = all(at[p] is not None for p in list(at)[5:])
    xa, xb, weight, resp = [], [], [], {"c1": [], "c2": [], "c12": []}
    for i in range(len(items.item_ids)):
        s = {p: items.scores[c][i] if c is not None else None for p, c in at.items()}
        c = int(items.answers[i])
        if c < 0 or any(s[p] is None for p in list(at)[:5]):
            continue
        s0 = s[(0.0, 0.0)]
        ga = (s[(h1, 0.0)] - s[(-h1, 0.0)]) / (2 * h1)
        gb = (s[(0.0, h2)] - s[(0.0, -h2)]) / (2 * h2)
        wrong = np.arange(s0.size) != c
        xa.extend((ga - ga[c])[wrong])
        xb.extend((gb - gb[c])[wrong])
        p = np.exp(s0 - s0.max())
        p /= p.sum()
        weight.append(p[c] * (1 - p[c]))
        e = np.zeros_like(p)
        e[c] = 1.0
        grad = p[c] * (e - p)
        hess = p[c] * (np.outer(e - p, e - p) - (np.diag(p) - np.outer(p, p)))
        ca = (s[(h1, 0.0)] + s[(-h1, 0.0)] - 2 * s0) / h1**2
        cb = (s[(0.0, h2)] + s[(0.0, -h2)] - 2 * s0) / h2**2
        resp["c1"].append(0.5 * ga @ hess @ ga + 0.5 * grad @ ca)
        resp["c2"].append(0.5 * gb @ hess @ gb + 0.5 * grad @ cb)
        if mixed:
            cab = (s[(h1, h2)] - s[(h1, -h2)] - s[(-h1, h2)] + s[(-h1, -h2)]) / (4 * h1 * h2)
            resp["c12"].append(ga @ hess @ gb + grad @ cab)
    if not weight:
        return None
    xa, xb = np.asarray(xa), np.asarray(xb)
    s1, s2 = float(np.sqrt(np.mean(xa**2))), float(np.sqrt(np.mean(xb**2)))
    rho = float(np.mean(xa * xb) / (s1 * s2)) if s1 > 0 and s2 > 0 else None
    w = float(np.mean(weight))
    corollary = {"c1": -w * s1**2 / 2, "c2": -w * s2**2 / 2,
                 "c12": None if rho is None else -w * rho * s1 * s2}
    response = {k: (float(np.mean(v)) if v else None) for k, v in resp.items()}
    return {"probe": [h1, h2], "sigma": [s1, s2], "rho": rho, "weight": w, "corollary": corollary,
            "response": response}


def _frontier(joint: JointRun, run: RunData) -> list[dict[str, Any]]:
    """Grid points no other point beats on helpfulness and every alignment at once."""
    help_tasks = [t for t in run.tasks_of_kind("helpfulness") if (t, "helpfulness") in joint.curves]
    align = {t: joint.curves[(t, "alignment")] for t in run.tasks_of_kind("alignment")
             if (t, "alignment") in joint.curves}
    if not help_tasks or not align:
        return []
    helpful = joint.curves[(help_tasks[0], "helpfulness")]
    points = []
    for idx, hv in zip(helpful.norms, helpful.mean):
        values = {t: c.at(idx) for t, c in align.items()}
        if all(v is not None for v in values.values()):
            points.append((int(idx), float(hv), values))
    objective = np.array([[hv, *vals.values()] for _, hv, vals in points])
    keep = [k for k in range(len(points))
            if not np.any(np.all(objective >= objective[k], axis=1) & np.any(objective > objective[k], axis=1))]
    return [{"norms": dict(zip(joint.names, map(float, joint.grid[points[k][0]]))), "helpfulness": points[k][1],
             "alignment": points[k][2]} for k in keep]


def fit_joint(run: RunData, *, window: float, n_boot: int, seed: int, warn) -> dict[str, Any]:
    """The ``joint`` block of fits.json."""
    joint = run.joint
    cfg = run.config
    out: dict[str, Any] = {"vectors": joint.names, "orthogonalize": bool(cfg.orthogonalize) if cfg else False,
                           "cosines": dict(cfg.cosines) if cfg else {},
                           "cosines_before": dict(cfg.cosines_before) if cfg else {},
                           "surfaces": {}, "predictions": {}, "frontier": _frontier(joint, run)}
    if joint.grid.shape[1] != 2:
        warn(f"the joint surface is fitted for two vectors; this run has {joint.grid.shape[1]}")
        return out
    windows = _surface_window(joint.grid, window)
    for task in run.tasks_of_kind("helpfulness"):
        items = joint.items.get(task)
        if items is None or "helpfulness" not in items.values:
            warn(f"{task}: no helpfulness items; the joint surface needs items.jsonl")
            continue
        grid = joint.point(items.norms)
        inside = np.all(np.abs(grid) <= np.array(windows) + 1e-12, axis=1)
        fit = fit_surface(grid[inside], items.values["helpfulness"][:, inside], n_boot=n_boot, seed=seed)
        fit.setdefault("n_points", int(inside.sum()))
        out["surfaces"][task] = {"task": task, "metric": "helpfulness", "formula": SURFACE_FORMULA,
                                 "window": windows, **fit}
        out["predictions"][task] = (None if (pred := predict_joint(joint, items)) is None
                                    else {"task": task, **pred})
    return out
