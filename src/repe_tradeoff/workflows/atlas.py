"""`atlas`: which layers to steer, measured for every layer and band of layers in one sweep.

1. One pass over the contrastive pairs reads every layer's hidden states; a direction per layer
   (the chosen method, fitted on all pairs) and its separation of held-out pairs (a direction
   fitted on the rest; :func:`repe_tradeoff.theory.decisions.layers.separation_numbers`).
2. The atlas' vector holds ``ρ_l · v̂_l`` (``ρ_l``: layer l's mean residual norm), so a norm r
   steers every layer by r times its own residual norm and layers are comparable.
3. Every entry (each layer, and each band of contiguous layers of the given widths) is probed
   at ``0, ±h``, all entries in the same forward passes (:mod:`repe_tradeoff.engine.layer_sets`).
4. Per entry, the response numbers (:func:`repe_tradeoff.theory.decisions.layers.entry_numbers`).
5. ``--confirm K``: sweeps of the K best entries at the norms of the plan's confirmation plan,
   through the ordinary sweep set-up (:func:`repe_tradeoff.workflows.prepare.prepare_sweep`); the
   recommendation then rests on the measured curves.

How much is measured (items, bands, confirmation) is an :class:`~repe_tradeoff.workflows.atlas_plan.AtlasPlan`.

Writes ``atlas.json`` / ``atlas.csv`` (:mod:`repe_tradeoff.runs.schema.atlas`), ``probes.jsonl``
(the probe's item records), ``vector.safetensors`` and the page (:mod:`repe_tradeoff.reporting.atlas`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from repe_tradeoff.engine.layer_sets import AtlasRunner, Entry, PointLayout
from repe_tradeoff.errors import RepeTradeoffError
from repe_tradeoff.models.loading import find_layers
from repe_tradeoff.runs import read_item_rows, write_atlas, write_jsonl
from repe_tradeoff.runs.schema.atlas import (
    ATLAS_METRICS,
    AtlasConfirmation,
    AtlasCorrelation,
    AtlasCost,
    AtlasEntry,
    AtlasFile,
)
from repe_tradeoff.tasks.choice import LikelihoodTask, Task
from repe_tradeoff.theory.decisions.layers import (
    correlation,
    entry_numbers,
    measured_numbers,
    separation_numbers,
)
from repe_tradeoff.theory.io.response import DEFAULT_PROBE_FRACTION
from repe_tradeoff.vectors.reading import METHODS, orient, read_hidden_states
from repe_tradeoff.vectors.vector import SteeringVector
from repe_tradeoff.workflows.atlas_plan import AtlasPlan, band_starts
from repe_tradeoff.workflows.settings import SweepSettings

DEFAULT_WIDTHS = (1, 4, 8)
DEFAULT_BUDGET = 0.05
#: A sweep of this many norms is what the atlas' cost is compared with.
SWEEP_NORMS = 33


class AtlasError(RepeTradeoffError):
    """Atlas settings that cannot be measured; the message says what to give instead."""


def parse_widths(spec: str | Sequence[int], n_layers: int) -> list[int]:
    """Band widths from ``1,4,8`` (each between 1 and the number of layers measured)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    try:
        widths = sorted({int(p) for p in parts})
    except ValueError:
        raise AtlasError(f"--bands {spec!r}: give band widths as whole numbers, e.g. 1,4,8") from None
    if not widths or widths[0] < 1 or widths[-1] > n_layers:
        raise AtlasError(f"--bands {spec!r}: each width must be between 1 and the {n_layers} layers measured")
    return widths


def atlas_entries(layers: Sequence[int], widths: Sequence[int], h: float, stride: int = 1) -> list[Entry]:
    """The bands of ``w`` contiguous layers inside ``layers`` for each width, ordered by lowest
    layer: every one, or with ``stride`` > 1 wider bands starting every ``stride`` layers
    (:func:`~repe_tradeoff.workflows.atlas_plan.band_starts`)."""
    entries = [Entry(tuple(range(start, start + w)), h) for w in widths for start in band_starts(layers, w, stride)]
    if not entries:
        raise AtlasError(f"no band of widths {list(widths)} fits inside the layers {list(layers)}: "
                         "give smaller --bands or more --layers")
    return sorted(entries, key=lambda e: (e.start, e.width))


@dataclass
class LayerReading:
    """One layer: its direction (all pairs), residual norm, and standardised projections of the
    held-out pairs by a direction fitted on the other pairs (with the training class means)."""

    direction: torch.Tensor
    residual_norm: float
    test_aligned: np.ndarray
    test_misaligned: np.ndarray
    train_means: tuple[float, float]


def read_layers(model, tokenizer, pairs: Sequence[tuple[str, str]], layers: Sequence[int], *, method: str = "pca",
                position: str = "last", holdout: float = 0.2, batch_size: int = 16) -> tuple[dict[int, LayerReading], int]:
    """Every layer's reading from one pass over the pairs; also the number of held-out pairs."""
    if method not in METHODS:
        raise AtlasError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    n = len(pairs)
    n_test = round(n * holdout)
    if n_test < 2 or n - n_test < 2:
        raise AtlasError(f"{n} contrastive pairs: the atlas holds out {holdout:.0%} to measure separation and "
                         "needs two or more on each side (give a behavior with 10 or more pairs)")
    states = read_hidden_states(model, tokenizer, [p[0] for p in pairs] + [p[1] for p in pairs], layers,
                                position=position, batch_size=batch_size)
    order = np.random.default_rng(0).permutation(n)  # the split `extract` uses
    test, train = torch.from_numpy(order[:n_test]), torch.from_numpy(order[n_test:])
    fit = METHODS[method]
    out = {}
    for layer in layers:
        a, m = states[layer][:n], states[layer][n:]
        held = orient(fit(a[train], m[train]), a[train], m[train])
        pa, pm = (a @ held).double().numpy(), (m @ held).double().numpy()
        mu, sd = np.r_[pa[train], pm[train]].mean(), np.r_[pa[train], pm[train]].std() or 1.0
        out[layer] = LayerReading(
            direction=orient(fit(a, m), a, m), residual_norm=float(torch.cat([a, m]).norm(dim=1).mean()),
            test_aligned=(pa[test] - mu) / sd, test_misaligned=(pm[test] - mu) / sd,
            train_means=(float((pa[train].mean() - mu) / sd), float((pm[train].mean() - mu) / sd)))
    return out, n_test


def entry_separation(entry: Entry, readings: dict[int, LayerReading], n_boot: int) -> dict:
    """The band's classifier: the mean of its layers' standardised projections, split midway
    between the training pairs' class means."""
    rs = [readings[layer] for layer in entry.layers]
    a = np.mean([r.test_aligned for r in rs], axis=0)
    m = np.mean([r.test_misaligned for r in rs], axis=0)
    threshold = float(np.mean([sum(r.train_means) / 2 for r in rs]))
    return separation_numbers(a, m, threshold, n_boot=n_boot)


def atlas_vector(readings: dict[int, LayerReading], metadata: dict) -> SteeringVector:
    """``ρ_l · v̂_l`` per layer: a norm r is then r × each layer's residual norm (recorded as 1)."""
    return SteeringVector({layer: r.direction * r.residual_norm for layer, r in readings.items()},
                          {**metadata, "residual_norms": {str(layer): 1.0 for layer in readings},
                           "atlas_residual_norms": {str(layer): r.residual_norm for layer, r in readings.items()},
                           "norm_unit": "each layer's residual norm"})


def block_rows(layout: PointLayout, n_blocks: int) -> int:
    """Rows × blocks one prompt costs: a point's rows run from its entry's lowest block on."""
    starts = layout.starts().tolist()
    return sum(n_blocks - s for s in starts)


def measure_probes(lm, tasks: Sequence[Task], vector: SteeringVector, layout: PointLayout, *, rows_per_pass: int,
                   chunk_size: int, limit: int | None | Mapping[str, int | None], positions: str,
                   progress=None) -> list[dict]:
    """Every task's item records at every point of the layout (``norm`` = the point's number);
    ``limit``: the first N items of each task, or a mapping from task kind to N (None: all)."""
    runner = AtlasRunner(lm.model, lm.tokenizer, vector, layout, rows_per_pass, positions)
    plans = []
    for task in tasks:
        n = _items(task, limit)
        plans += [(task, list(range(s, min(s + chunk_size, n)))) for s in range(0, n, chunk_size)]
    if progress:
        progress.start(sum(len(ids) for _, ids in plans) * layout.size, 0)
    records = []
    for task, ids in plans:
        part = task.score_items(runner, ids)
        records += part
        if progress:
            progress.advance(len(part))
    return records


def _items(task: Task, limit: int | None | Mapping[str, int | None]) -> int:
    n = limit.get(task.kind) if isinstance(limit, Mapping) else limit
    return min(task.n_items, n) if n else task.n_items


def entry_records(records: Sequence[dict], layout: PointLayout) -> list[list[dict]]:
    """Per entry, its records at 0, +h and −h (the shared point 0 in every entry's)."""
    out: list[list[dict]] = [[] for _ in layout.entries]
    for rec in records:
        e, r = layout.point(int(rec["norm"]))
        for i in (range(len(out)) if e is None else (e,)):
            out[i].append({**rec, "norm": r})
    return out


def _estimate(t) -> dict:
    return {"value": t[0], "low": t[1], "high": t[2]}


def ranked(rows: list[dict]) -> list[dict]:
    """Rows with ``rank`` by alignment gained at the budget (entries without one: null, last)."""
    order = sorted((i for i, r in enumerate(rows) if r["alignment_gain_at_budget"]["value"] is not None),
                   key=lambda i: -rows[i]["alignment_gain_at_budget"]["value"])
    for k, i in enumerate(order):
        rows[i]["rank"] = k + 1
    return sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0, r["first"], r["width"]))


def recommendation(rows: list[dict], budget: float) -> tuple[str | None, str]:
    best = next((r for r in rows if r["rank"] == 1), None)
    if best is None:
        return None, (f"No layer set loses {budget:g} of predicted P(correct) within the probe's reach: "
                      "measure a full sweep (`sweep --norms auto`) of the layers of interest.")
    g, t = best["alignment_gain_at_budget"], best["norm_at_budget"]["value"]
    ci = f" [{g['low']:.3f}, {g['high']:.3f}]" if g["low"] is not None and g["high"] is not None else ""
    kind = "layer" if best["width"] == 1 else "layers"
    return best["layers"], (f"Steer {kind} {best['layers']}: at r = {t:.3g} × each layer's residual norm, "
                            f"alignment gains {g['value']:.3f}{ci} for {budget:g} of predicted helpfulness.")


def run_atlas(lm, settings: SweepSettings, pairs: Sequence[tuple[str, str]], out: Path, *, layers: Sequence[int],
              widths: Sequence[int], budget: float = DEFAULT_BUDGET, method: str = "pca", position: str = "last",
              probe_fraction: float = DEFAULT_PROBE_FRACTION, confirm: int | None = None, n_boot: int = 200,
              tasks: Sequence[Task], model_name: str, behavior: str, command: str | None = None,
              plan: AtlasPlan | None = None, progress=None, sweep_progress=None) -> Path:
    """Measure the atlas of ``layers`` into ``out`` (atlas.json, atlas.csv, probes.jsonl, page).

    ``plan`` says how much to measure (default: :class:`~repe_tradeoff.workflows.atlas_plan.AtlasPlan`,
    capped by ``settings.limit``); ``confirm`` overrides its number of confirmed entries."""
    from repe_tradeoff.engine.batching import default_batch_size
    from repe_tradeoff.reporting.atlas import build_atlas_report

    out = Path(out)
    kinds = [t.kind for t in tasks]
    if kinds.count("alignment") != 1 or kinds.count("helpfulness") != 1 or \
            not all(isinstance(t, LikelihoodTask) for t in tasks):
        raise AtlasError("the atlas measures one alignment task (forced-choice or yes-no) and one helpfulness "
                         "task: give one --behavior with a likelihood scorer and one --helpfulness")
    if not budget > 0:
        raise AtlasError(f"--budget {budget:g}: give the loss of P(correct) to allow, e.g. 0.05")
    if confirm is not None and confirm < 0:
        raise AtlasError(f"--confirm {confirm}: give how many of the best entries to sweep (0 for none)")
    plan = (plan or AtlasPlan()).with_limit(settings.limit)
    if confirm is not None:
        plan = replace(plan, confirm=confirm)
    entries = atlas_entries(layers, widths, probe_fraction, plan.band_stride)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    readings, n_test = read_layers(lm.model, lm.tokenizer, pairs, sorted(layers), method=method, position=position)
    reading_seconds = time.perf_counter() - started
    vector = atlas_vector(readings, {"model": model_name, "dataset": behavior, "method": method, "atlas": True,
                                     "n_layers": len(find_layers(lm.model)), "hidden_size": lm.model.config.hidden_size})
    vector.save(out / "vector.safetensors")
    layout = PointLayout(tuple(entries))
    records = measure_probes(lm, tasks, vector, layout, rows_per_pass=settings.batch_size or default_batch_size(lm.model),
                             chunk_size=settings.chunk_size, limit=plan.probe_items, positions=settings.positions,
                             progress=progress)
    seconds = time.perf_counter() - started
    write_jsonl(out / "probes.jsonl", [{**rec, "norm": layout.point(int(rec["norm"]))[1],
                                         "layers": (None if layout.point(int(rec["norm"]))[0] is None
                                                    else entries[layout.point(int(rec["norm"]))[0]].label)}
                                        for rec in records])
    rows, warnings = [], []
    for entry, recs in zip(entries, entry_records(records, layout)):
        numbers = {**entry_numbers(recs, entry.h, budget, n_boot=n_boot),
                   **entry_separation(entry, readings, n_boot)}
        rows.append({"layers": entry.label, "width": entry.width, "first": entry.start, "last": max(entry.layers),
                     "probe_h": entry.h, "rank": None, **{m: _estimate(numbers[m]) for m in ATLAS_METRICS}})
    rows = ranked(rows)
    best, line = recommendation(rows, budget)
    corr = correlation([r["separation_effect"]["value"] for r in rows],
                       [r["alignment_gain_at_budget"]["value"] for r in rows])
    n_blocks = len(find_layers(lm.model))
    sweep_rows = min(entries[0].layers) + SWEEP_NORMS * (n_blocks - min(entries[0].layers))
    n_items = {t.name: _items(t, plan.probe_items) for t in tasks}
    atlas = AtlasFile(
        command=command, model=model_name, behavior=behavior,
        alignment_task=next(t.name for t in tasks if t.kind == "alignment"),
        helpfulness_task=next(t.name for t in tasks if t.kind == "helpfulness"), method=method,
        n_layers=len(layers), widths=list(widths), budget=budget, probe_fraction=probe_fraction, n_pairs=len(pairs),
        n_heldout_pairs=n_test, n_items=n_items, n_boot=n_boot, entries=[AtlasEntry.model_validate(r) for r in rows],
        correlation=AtlasCorrelation(**corr), best=best, recommendation=line,
        cost=AtlasCost(seconds=seconds, reading_seconds=reading_seconds,
                       block_rows_per_sequence=block_rows(layout, n_blocks), sweep_norms=SWEEP_NORMS,
                       sweep_block_rows_per_sequence=sweep_rows),
        band_stride=plan.band_stride, warnings=warnings)
    write_atlas(out, atlas)
    if plan.confirm:
        started = time.perf_counter()
        atlas.confirm_plan, atlas.confirm_items = plan.confirm_plan, plan.confirm_items
        atlas.confirmations = confirm_entries(lm, settings, vector, [r for r in rows if r["rank"]][:plan.confirm],
                                              out, tasks=tasks, budget=budget, n_boot=n_boot, model_name=model_name,
                                              command=command, progress=sweep_progress, plan=plan)
        atlas.cost.confirm_seconds = time.perf_counter() - started
        measured = measured_best(atlas.confirmations, budget)
        if measured:
            atlas.best, atlas.recommendation, atlas.best_from = *measured, "measured"
        write_atlas(out, atlas)
    build_atlas_report(out)
    return out


def confirm_entries(lm, settings: SweepSettings, vector: SteeringVector, rows: list[dict], out: Path, *,
                    tasks: Sequence[Task], budget: float, n_boot: int, model_name: str, command: str | None,
                    progress=None, plan: AtlasPlan | None = None) -> list[AtlasConfirmation]:
    """A sweep (same tasks, the atlas' vector) of each row's layers at the norms of the plan's
    confirmation plan (default: the automatic grid on the settings' items), measured."""
    from repe_tradeoff.workflows.prepare import prepare_sweep
    from repe_tradeoff.workflows.sweep import run_sweep

    limit = settings.limit if plan is None else plan.confirm_items
    done = []
    for row in rows:
        norms = "auto" if plan is None else plan.norms_for(row)
        # `auto` here is the dense automatic grid, as before (no `points` would mean the sequential plan)
        sweep_settings = settings.model_copy(update={"norms": norms, "norm_unit": "absolute", "limit": limit,
                                                     "points": settings.points or 33})
        layers = list(range(row["first"], row["last"] + 1))
        folder = out / "confirm" / row["layers"]
        steered = SteeringVector({layer: vector[layer] for layer in layers}, dict(vector.metadata))
        sweep_plan, config = prepare_sweep(lm, sweep_settings, steered, layers, model_name=model_name,
                                           command=command, extra={"atlas_entry": row["layers"]}, tasks=list(tasks),
                                           out=folder)
        run_sweep(lm.model, lm.tokenizer, steered, sweep_plan, folder, config=config, limit=limit,
                  progress=progress)
        items = read_item_rows(folder)
        measured = measured_numbers(items, budget, n_boot=n_boot)
        done.append(AtlasConfirmation(layers=row["layers"], run=str(folder.relative_to(out)),
                                      norms=list(sweep_plan.norms), n_items=len({repr(r["item"]) for r in items}),
                                      **{k: _estimate(v) for k, v in measured.items()}))
    return done


def measured_best(confirmations: Sequence[AtlasConfirmation], budget: float) -> tuple[str, str] | None:
    """The confirmed entry with the most measured alignment gained within the budget, and its
    sentence; None when no confirming sweep reached the budget."""
    reached = [c for c in confirmations if c.alignment_gain_at_budget.value is not None]
    if not reached:
        return None
    best = max(reached, key=lambda c: c.alignment_gain_at_budget.value)
    g, t = best.alignment_gain_at_budget, best.norm_at_budget.value
    ci = f" [{g.low:.3f}, {g.high:.3f}]" if g.low is not None and g.high is not None else ""
    kind = "layer" if "-" not in best.layers else "layers"
    return best.layers, (f"Steer {kind} {best.layers}: measured at r = {t:.3g} × each layer's residual norm, "
                         f"alignment gains {g.value:.3f}{ci} for {budget:g} of helpfulness "
                         f"(best of {len(confirmations)} confirmed entries).")


#: The layer set a run config names to have the atlas choose it (``layer_sets: [atlas]``).
ATLAS_LAYER_SET = "atlas"


def atlas_layers(lm, settings: SweepSettings, pairs: Sequence[tuple[str, str]], out: Path, *, behavior: str,
                 model_name: str, method: str = "pca", position: str = "last", n_boot: int = 200,
                 budget: float = DEFAULT_BUDGET) -> list[int]:
    """The layers of the atlas' best entry (all layers, widths 1, 4, 8), measured into ``out``
    with the first helpfulness task of ``settings`` (an atlas already there is reused)."""
    from repe_tradeoff.models.loading import n_layers
    from repe_tradeoff.runs import read_atlas
    from repe_tradeoff.workflows.prepare import build_tasks

    if not (Path(out) / "atlas.json").is_file():
        chosen = settings.model_copy(update={"helpfulness": settings.helpfulness[:1], "norms": "0"})
        n = n_layers(lm.model)
        run_atlas(lm, chosen, pairs, out, layers=list(range(n)), widths=[w for w in DEFAULT_WIDTHS if w <= n],
                  budget=budget, method=method, position=position, n_boot=n_boot, tasks=build_tasks(chosen),
                  model_name=model_name, behavior=behavior)
    atlas = read_atlas(out)
    best = next((e for e in atlas.entries if e.layers == atlas.best), None)
    if best is None:
        raise AtlasError(f"the atlas in {out} found no layer set that reaches the helpfulness budget {budget:g}: "
                         "name the layers in `layer_sets` (e.g. middle) instead of atlas")
    return list(range(best.first, best.last + 1))
