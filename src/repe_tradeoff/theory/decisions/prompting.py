"""Steering at the recommended norm against the prompting baseline and both together.

Reads the run folder and its ``baseline/`` sub-run (written by
:func:`repe_tradeoff.workflows.baseline.measure_baseline`) and compares four conditions on the same items:
no steering and no instruction (the run at r = 0), steering at r* (the run at r*), the
instruction alone (``baseline/`` at r = 0), and both (``baseline/`` at r*). Means over items with
95% percentile intervals of a bootstrap over items.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repe_tradeoff.runs import RunData, RunFileError, read_config, read_fits, read_run
from repe_tradeoff.runs.schema import BaselineFile
from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.laws.fitting import percentile_ci
from repe_tradeoff.theory.laws.replicates import rng_for

CONDITIONS = (
    ("no steering, no instruction", "run", False),
    ("steering at r*", "run", True),
    ("instruction only (prompting)", "baseline", False),
    ("instruction + steering at r*", "baseline", True),
)


def _value(run: RunData, task: str, metric: str, r: float, n_boot: int, seed: int):
    items = run.items.get(task)
    j = None if items is None else items.norm_index(r)
    if j is None or metric not in items.values:
        return None, None, 0
    x = items.values[metric][:, j]
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None, None, 0
    ci = None
    if n_boot > 0 and x.size > 1:
        idx = rng_for(seed, "prompting", task, metric).integers(0, x.size, (n_boot, x.size))
        ci = percentile_ci(x[idx].mean(axis=1))
    return float(x.mean()), ci, int(x.size)


def compare_prompting(run_dir: Path, *, n_boot: int = 200, seed: int = 0) -> BaselineFile:
    """The four conditions (see the module notes) as the typed contents of baseline.json."""
    run_dir = Path(run_dir)
    sub = run_dir / "baseline"
    try:
        run, base = read_run(run_dir), read_run(sub)
        fits = read_fits(run_dir)
        sub_cfg = read_config(sub / "config.json")
    except RunFileError as err:
        raise TheoryError(str(err)) from None
    a_task = next(iter(run.tasks_of_kind("alignment")), None)
    h_task = next(iter(run.tasks_of_kind("helpfulness")), None)
    if fits is not None and fits.efficient_regime is not None:
        a_task, h_task = fits.efficient_regime.alignment_task, fits.efficient_regime.helpfulness_task
    instruction = getattr(sub_cfg, "instruction", None)
    r_star = float(getattr(sub_cfg, "recommended_norm", 0.0) or 0.0)
    rows = []
    for label, where, steered in CONDITIONS:
        src = run if where == "run" else base
        r = r_star if steered else 0.0
        row = {"condition": label, "instruction": where == "baseline", "norm": r}
        for key, task, metric in (("alignment", a_task, "alignment"),
                                  ("helpfulness", h_task, "helpfulness")):
            mean, ci, n = (None, None, 0) if task is None else _value(src, task, metric, r, n_boot, seed)
            row.update({key: mean, f"{key}_ci": ci, f"n_{key}": n})
        rows.append(row)
    return BaselineFile.model_validate({
        "format_version": 1, "instruction": instruction or "", "placement": "prefix",
        "recommended_norm": r_star, "alignment_task": a_task, "helpfulness_task": h_task,
        "ci_method": "bootstrap-items" if n_boot > 0 else None, "n_boot": int(n_boot), "rows": rows,
    })
