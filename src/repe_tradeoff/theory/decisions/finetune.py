r"""Fine-tuning against steering at equal alignment gain: which buys alignment cheaper?

Each method is a curve of (alignment gain, helpfulness loss) points against its own unchanged
model: fine-tuning's checkpoints in training order (gain and loss against step 0), steering's
norms ``r ≥ 0`` in increasing order (against ``r = 0``). The comparison gain ``G`` is the largest
gain both curves reach. On each curve, the loss at ``G`` is read at the first point where the gain
reaches ``G``, interpolating linearly between that point and the one before it.

Intervals: a paired bootstrap over items — the same resampled alignment items and helpfulness
items in both runs (they score the same items) — with ``G`` held at its measured value; a
replicate in which a curve does not reach ``G`` gives no value for it (their number is reported).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from repe_tradeoff.runs import read_jsonl, task_items
from repe_tradeoff.theory.checks.breakdown import RESPONSE_LOGPROB_DROP
from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.laws.finetune import _clean, read_finetune, task_of
from repe_tradeoff.theory.laws.fitting import percentile_ci
from repe_tradeoff.theory.laws.replicates import rng_for


def loss_at_gain(gain: np.ndarray, loss: np.ndarray, target: float) -> float:
    """The loss where ``gain`` (in curve order) first reaches ``target``, linearly interpolated; NaN if never."""
    hit = np.flatnonzero(gain >= target - 1e-12)
    if hit.size == 0:
        return float("nan")
    j = int(hit[0])
    if j == 0:
        return float(loss[0])
    g0, g1 = gain[j - 1], gain[j]
    t = 0.0 if g1 == g0 else (target - g0) / (g1 - g0)
    return float(loss[j - 1] + t * (loss[j] - loss[j - 1]))


def _aligned(a, b, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of two TaskItems matched by item id (the items both runs scored)."""
    ids_b = {json.dumps(i): k for k, i in enumerate(b.item_ids)}
    rows = [(k, ids_b[json.dumps(i)]) for k, i in enumerate(a.item_ids) if json.dumps(i) in ids_b]
    if len(rows) < 2:
        raise TheoryError(f"the fine-tuning and steering runs share {len(rows)} {label} item(s): score the same "
                          "tasks (and --limit) in both")
    ia, ib = (np.array(x) for x in zip(*rows))
    return ia, ib


def _curves(align: np.ndarray, helpful: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gain and loss per point from per-item values (rows items, columns points; column 0 the start)."""
    a, h = np.nanmean(align, axis=0), np.nanmean(helpful, axis=0)
    return a - a[0], h[0] - h


def _at_gain(target: float, ft: tuple, st: tuple, values: tuple, n_boot: int, seed: int) -> dict[str, Any]:
    """Both losses at ``target`` and their paired-bootstrap intervals (``values``: per-item arrays)."""
    ft_a, ft_h, st_a, st_h = values
    f0, s0 = loss_at_gain(*ft, target), loss_at_gain(*st, target)
    rng = rng_for(seed, "finetune", "compare")  # the same resamples at every gain
    reps: dict[str, list[float]] = {"finetune": [], "steering": [], "difference": []}
    for _ in range(n_boot):
        ia = rng.integers(0, ft_a.shape[0], ft_a.shape[0])
        ih = rng.integers(0, ft_h.shape[0], ft_h.shape[0])
        f = loss_at_gain(*_curves(ft_a[ia], ft_h[ih]), target)
        s = loss_at_gain(*_curves(st_a[ia], st_h[ih]), target)
        reps["finetune"].append(f)
        reps["steering"].append(s)
        reps["difference"].append(f - s)
    ci = percentile_ci(reps["difference"])
    cheaper = None
    if ci is not None:
        cheaper = "finetune" if ci[1] < 0 else "steering" if ci[0] > 0 else "neither (the interval contains 0)"
    return {"gain": target, "finetune": f0, "finetune_ci": percentile_ci(reps["finetune"]),
            "finetune_not_reaching": int(np.sum(~np.isfinite(reps["finetune"]))),
            "steering": s0, "steering_ci": percentile_ci(reps["steering"]),
            "steering_not_reaching": int(np.sum(~np.isfinite(reps["steering"]))),
            "difference": f0 - s0, "difference_ci": ci, "cheaper": cheaper}


def steering_items(run_dir: Path, align_task: str, help_task: str):
    path = Path(run_dir) / "items.jsonl"
    if not path.is_file():
        raise TheoryError(f"{run_dir} holds no items.jsonl: give --against a finished steering sweep folder")
    items = task_items(read_jsonl(path), path)
    return task_of(items, "alignment", align_task), task_of(items, "helpfulness", help_task)


def _fluent_points(logprob: np.ndarray | None, columns: list[int]) -> int:
    """How many leading points (``columns`` in curve order) come before the first whose likelier
    forced-choice response lost more than RESPONSE_LOGPROB_DROP nats per token against the first."""
    if logprob is None:
        return len(columns)
    means = np.nanmean(logprob[:, columns], axis=0)
    broken = np.flatnonzero(means < means[0] - RESPONSE_LOGPROB_DROP)
    return int(broken[0]) if broken.size else len(columns)


def compare_steering(ft_dir: Path, steer_dir: Path, *, n_boot: int = 200, seed: int = 0,
                     fluent_only: bool = True) -> dict[str, Any]:
    """Both methods' helpfulness loss at the largest alignment gain both reach, with 95 % intervals.
    ``fluent_only``: each curve ends before its first point where the model no longer answers (the
    likelier forced-choice response lost more than ln 10 nats per token, as in the sweep's breakdown)."""
    config, shifts, items = read_finetune(ft_dir)
    fa, fh = task_of(items, "alignment"), task_of(items, "helpfulness")
    sa, sh = steering_items(steer_dir, fa.task, fh.task)
    order = [int(np.flatnonzero(np.isclose(fa.norms, s["shift_norm"], atol=1e-9))[0]) for s in shifts]
    order_h = [int(np.flatnonzero(np.isclose(fh.norms, s["shift_norm"], atol=1e-9))[0]) for s in shifts]
    pos_a, pos_h = np.flatnonzero(sa.norms >= 0), np.flatnonzero(sh.norms >= 0)
    if sa.norm_index(0.0) is None or pos_a.size < 2:
        raise TheoryError(f"{steer_dir} needs r = 0 and positive norms in its grid to compare with fine-tuning")
    ia_f, ia_s = _aligned(fa, sa, "alignment")
    ih_f, ih_s = _aligned(fh, sh, "helpfulness")
    ft_a, ft_h = fa.values["alignment"][ia_f][:, order], fh.values["helpfulness"][ih_f][:, order_h]
    st_a, st_h = sa.values["alignment"][ia_s][:, pos_a], sh.values["helpfulness"][ih_s][:, pos_h]
    # both curves end before the first point where the model stops answering (the sweep's breakdown rule)
    cut_ft = _fluent_points(fa.values.get("response_logprob"), order) if fluent_only else len(order)
    cut_st = _fluent_points(sa.values.get("response_logprob"), list(pos_a)) if fluent_only else pos_a.size
    ft_a, ft_h, st_a, st_h = ft_a[:, :cut_ft], ft_h[:, :cut_ft], st_a[:, :cut_st], st_h[:, :cut_st]
    g_ft, l_ft = _curves(ft_a, ft_h)
    g_st, l_st = _curves(st_a, st_h)
    target = float(min(np.nanmax(g_ft), np.nanmax(g_st)))
    if not target > 0:
        raise TheoryError("one of the two methods never raises alignment above its start, so there is no "
                          "common gain to compare at")
    at = {t: _at_gain(t, (g_ft, l_ft), (g_st, l_st), (ft_a, ft_h, st_a, st_h), n_boot, seed)
          for t in (target, target / 2, target / 4)}
    main = at[target]
    return _clean({
        "gain": target, "n_boot": n_boot, "seed": seed, "ci_method": "paired-bootstrap-items",
        "fluent_only": fluent_only, "points_used": {"finetune": int(cut_ft), "steering": int(cut_st)},
        "at_smaller_gains": [at[t] for t in (target / 2, target / 4)],
        "finetune": {"loss": main["finetune"], "loss_ci": main["finetune_ci"],
                     "replicates_not_reaching": main["finetune_not_reaching"], "max_gain": float(np.nanmax(g_ft)),
                     "curve": [{"step": s["step"], "shift_norm": s["shift_norm"], "gain": g, "loss": lo}
                               for s, g, lo in zip(shifts[:cut_ft], g_ft, l_ft)]},
        "steering": {"loss": main["steering"], "loss_ci": main["steering_ci"],
                     "replicates_not_reaching": main["steering_not_reaching"], "max_gain": float(np.nanmax(g_st)),
                     "curve": [{"norm": float(r), "gain": g, "loss": lo}
                               for r, g, lo in zip(sa.norms[pos_a], g_st, l_st)], "run": str(steer_dir)},
        "difference": main["difference"], "difference_ci": main["difference_ci"], "cheaper": main["cheaper"],
        "n_alignment_items": int(ft_a.shape[0]), "n_helpfulness_items": int(ft_h.shape[0]),
        "alignment_task": fa.task, "helpfulness_task": fh.task, "behavior": config.get("behavior"),
    })
