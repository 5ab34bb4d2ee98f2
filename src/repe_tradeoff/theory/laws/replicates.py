"""Bootstrap replicates of a run's curves and the laws refitted to them, cached per fit."""

from __future__ import annotations

import warnings as _warnings
import zlib

import numpy as np

from repe_tradeoff.runs import Curve, RunData
from repe_tradeoff.theory.laws.fitting import FitResult, refit


def rng_for(seed: int, *labels: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and labels, so each draw is independent of the others."""
    return np.random.default_rng([int(seed)] + [zlib.crc32(lab.encode()) for lab in labels])


class FitContext:
    """Shared state of one ``fit_run``: bootstrap replicates and refits, cached."""

    def __init__(self, run: RunData, n_boot: int, seed: int, warnings: list[str]):
        self.run = run
        self.n_boot = n_boot
        self.seed = seed
        self.warnings = warnings
        self._idx: dict[str, np.ndarray] = {}
        self._reps: dict[tuple[str, str], tuple[np.ndarray | None, str | None]] = {}
        self._boot: dict[tuple, list[np.ndarray | None]] = {}

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    def replicates(self, curve: Curve) -> tuple[np.ndarray | None, str | None]:
        """``(n_boot, n_norms)`` replicates of the curve's means and how they were drawn."""
        key = (curve.task, curve.metric)
        if key in self._reps:
            return self._reps[key]
        out: tuple[np.ndarray | None, str | None] = (None, None)
        if self.n_boot > 0:
            out = self._item_replicates(curve) or self._parametric_replicates(curve)
        self._reps[key] = out
        return out

    def _item_replicates(self, curve: Curve):
        items = self.run.items.get(curve.task)
        if items is None or curve.metric not in items.values:
            return None
        cols = [items.norm_index(r) for r in curve.norms]
        if any(c is None for c in cols):
            self.warn(
                f"{curve.task}/{curve.metric}: items.jsonl lacks some norms of points.jsonl; "
                "intervals from standard errors instead"
            )
            return None
        mat = items.values[curve.metric][:, cols]
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            item_means = np.nanmean(mat, axis=0)
        diff = np.nanmax(np.abs(item_means - curve.mean)) if mat.size else 0.0
        if np.isfinite(diff) and diff > 1e-6:
            self.warn(
                f"{curve.task}/{curve.metric}: items.jsonl means differ from points.jsonl "
                f"(max |diff| = {diff:.3g}); bootstrap intervals resample the items"
            )
        if curve.task not in self._idx:
            n = mat.shape[0]
            self._idx[curve.task] = rng_for(self.seed, "items", curve.task).integers(
                0, n, (self.n_boot, n)
            )
        idx = self._idx[curve.task]
        reps = np.empty((self.n_boot, len(cols)))
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            for b in range(self.n_boot):
                reps[b] = np.nanmean(mat[idx[b]], axis=0)
        return reps, "bootstrap-items"

    def _parametric_replicates(self, curve: Curve):
        if not curve.has_stderr:
            return None, None
        se = np.where(np.isfinite(curve.stderr), curve.stderr, 0.0)
        rng = rng_for(self.seed, "parametric", curve.task, curve.metric)
        reps = curve.mean[None, :] + se[None, :] * rng.standard_normal((self.n_boot, se.size))
        return reps, "bootstrap-parametric"

    def boot_params(
        self, curve: Curve, res: FitResult, sigma, window: float | None = None, span=None
    ) -> list[np.ndarray | None] | None:
        """The law refitted to every replicate of ``curve`` (None where a refit failed)."""
        if not res.ok:
            return None
        reps, _ = self.replicates(curve)
        if reps is None:
            return None
        key = (curve.task, curve.metric, res.law.name, res.law.formula, window, span)
        if key not in self._boot:
            self._boot[key] = [
                refit(res.law, curve.norms, reps[b], sigma, res.params, window, span)
                for b in range(reps.shape[0])
            ]
        return self._boot[key]
