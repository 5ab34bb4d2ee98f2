"""The response of a run folder: `fit` validates it on a full sweep, `predict` measures only the
probe; checked against hand evaluations of synthetic polynomial scores (and a by-hand fit of the
saturating curve) and, on the embedded model, against a sweep of the same grid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from repe_tradeoff.reporting import build_report
from repe_tradeoff.reporting._io import load_run
from repe_tradeoff.reporting.plots import plot_helpfulness
from repe_tradeoff.reporting.prediction import build_prediction_summary
from repe_tradeoff.runs import (
    read_predicted,
    write_config,
    write_jsonl,
    write_points,
    write_response,
)
from repe_tradeoff.runs.schema import ResponseFile
from repe_tradeoff.theory import fit_run
from repe_tradeoff.theory.io.response import choose_probe, run_response
from tests.helpers import hand_saturating, response_items, true_gap, true_scores

GRID = [round(x, 6) for x in np.arange(-1.0, 1.0001, 0.125)]  # 17 norms, step 0.125
RESIDUAL = 10.0  # the default probe is 0.0125 × 10 = 0.125, one grid step


def _softmax_at(scores, answer):
    w = [math.exp(x) for x in scores]
    return w[answer] / sum(w)


def _write_run(folder, items, grid):
    rows = []
    for r in grid:
        for q, it in enumerate(items):
            s = true_scores(it, r)
            rows.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": q,
                         "answer": it["answer"], "scores": s.tolist(),
                         "helpfulness": _softmax_at(s, it["answer"])})
            gap = float(true_gap(it, r))
            rows.append({"task": "harm", "kind": "alignment", "norm": r, "item": q,
                         "logit_gap": gap, "alignment": math.tanh(gap / 2)})
    folder.mkdir(exist_ok=True)
    write_jsonl(folder / "items.jsonl", rows)
    write_points(folder)
    write_config(folder, {
        "model": "synthetic", "norms": grid,
        "tasks": [{"name": "harm", "kind": "alignment"},
                  {"name": "qa", "kind": "helpfulness", "n_choices": 4}],
        "norm_scale": {"residual_norm": {"3": RESIDUAL}}})
    return folder


def _hand_prediction(items, r, h):
    """Mean over items of the softmax at the answer of each margin's saturating curve through
    the probe values at 0, ±h, ±2h (fitted by hand, tests.test_response.hand_saturating)."""
    vals = []
    for it in items:
        ans = it["answer"]
        probe = [true_scores(it, x * h) for x in (-2, -1, 0, 1, 2)]
        margins = [hand_saturating([s[o] - s[ans] for s in probe], h)(r) for o in range(len(it["a"]))]
        vals.append(_softmax_at(margins, ans))
    return float(np.mean(vals))


def _hand_measured(items, r):
    return float(np.mean([_softmax_at(true_scores(it, r), it["answer"]) for it in items]))


def test_choose_probe_prefers_a_pair_with_2h_nearest_the_target():
    grid = [-4, -2, -1, -0.5, 0, 0.5, 1, 2, 4]
    assert choose_probe(grid, 2.0).h == 2.0 and choose_probe(grid, 2.0).has_2h
    assert choose_probe(grid, 0.9).h == 1.0
    assert choose_probe(grid).h == 0.5  # no target: the smallest pair with ±2h
    assert choose_probe([-3, -1, 0, 1, 3], 3.0).h == 3.0  # no pair has ±2h: nearest pair


def test_fit_validates_the_probe_against_the_measured_curve(tmp_path):
    items = response_items(n=25, cubic=1.5, quartic=6.0, seed=3)
    run = _write_run(tmp_path / "run", items, GRID)
    fits = fit_run(run, n_boot=50)
    block = fits["tasks"]["qa"]["response"]
    h = 0.125
    assert block["probe_h"] == pytest.approx(h) and block["probe_norms"] == [-0.25, -0.125, 0.0, 0.125, 0.25]
    # the window where the measured helpfulness is within 0.15 of r = 0, walked out by hand
    base = _hand_measured(items, 0.0)
    i0 = GRID.index(0.0)
    lo = i0
    while lo > 0 and base - _hand_measured(items, GRID[lo - 1]) <= 0.15:
        lo -= 1
    hi = i0
    while hi < len(GRID) - 1 and base - _hand_measured(items, GRID[hi + 1]) <= 0.15:
        hi += 1
    window = GRID[lo:hi + 1]
    err = np.array([_hand_prediction(items, r, h) - _hand_measured(items, r) for r in window])
    (check,) = [v for v in block["validation"]
                if v["metric"] == "helpfulness" and v["scope"] == "loss-window"]
    assert check["norms"] == pytest.approx(window)
    assert check["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))), abs=1e-8)
    assert check["max_error"] == pytest.approx(float(np.abs(err).max()), abs=1e-8)
    assert check["rmse"] > 1e-4  # the quartic is there, and the check sees it
    radius = block["trust_radius"]
    assert radius is not None and 2 * h < radius < 1.0  # the quartic is seen beyond the probe
    assert block["model"] == "saturating"
    (inside,) = [v for v in block["validation"]
                 if v["metric"] == "helpfulness" and v["scope"] == "trust-radius"]
    assert inside["norms"] == pytest.approx([r for r in window if abs(r) <= radius])
    assert inside["status"] is None and inside["rmse"] < check["rmse"]
    # predicted.jsonl holds the same prediction over the whole grid
    pred = {p.norm: p for p in read_predicted(run) if p.task == "qa" and p.metric == "helpfulness"}
    for r in GRID:
        assert pred[r].mean == pytest.approx(_hand_prediction(items, r, h), abs=1e-8)
        assert pred[r].low <= pred[r].mean <= pred[r].high
    align = fits["tasks"]["harm"]["response"]
    assert align["kind"] == "alignment" and {v["scope"] for v in align["validation"]} >= {"all"}
    # the five-point slope is exact for a quartic gap: Δ'(0) = gb
    slope = np.mean([0.5 * (1 - math.tanh(it["ga"] / 2) ** 2) * it["gb"] for it in items])
    assert align["slope_at_zero"]["value"] == pytest.approx(slope, rel=1e-9)


def test_report_draws_and_grades_this_prediction_and_keeps_the_papers(tmp_path):
    items = response_items(n=25, cubic=0.0, seed=4)  # exactly quadratic: the prediction is exact
    run = _write_run(tmp_path / "run", items, GRID)
    fits = fit_run(run, n_boot=20)
    assert fits["tasks"]["qa"]["response"]["status"] == "pass"
    build_report(run, formats=("png",))
    summary = (run / "summary.md").read_text()
    assert "**PASS** On qa, Prediction (helpfulness predicted from the probe norms 0, ±h, ±2h vs measured) holds" in summary
    assert "Paper's prediction (helpfulness predicted from A1/A3 vs measured) holds" in summary
    assert "## Prediction from the probe norms" in summary and "spread (A3)" in summary
    fig = plot_helpfulness(load_run(run))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("predicted from the probe (h = 0.125), 95% band, RMSE 0.000")
               for t in labels), labels
    assert any(t.startswith("paper's prediction from A1/A3") for t in labels), labels


def test_a_probe_only_run_predicts_the_grid_and_writes_its_summary(tmp_path):
    items = response_items(n=20, cubic=0.0, seed=5)
    run = _write_run(tmp_path / "probe", items, [-0.25, -0.125, 0.0, 0.125, 0.25])
    warnings: list[str] = []
    blocks = run_response(run, norms=GRID, target_h=0.125, n_boot=20, warnings=warnings)
    assert blocks["qa"]["validation"] == [] and warnings == []
    pred = {p.norm: p.mean for p in read_predicted(run) if p.metric == "helpfulness"}
    assert sorted(pred) == GRID
    for r in (-1.0, 0.5, 1.0):  # far outside the probe, still exact for quadratic scores
        assert pred[r] == pytest.approx(_hand_measured(items, r), abs=1e-9)
    write_response(run, ResponseFile.model_validate(
        {"command": "repe-tradeoff predict ...", "predicted_norms": GRID, "tasks": blocks}))
    text = build_prediction_summary(run).read_text()
    assert "| r | qa helpfulness [95% band] | harm alignment [95% band] |" in text
    assert f"| 1 | {pred[1.0]:.3f} [" in text


def test_the_summary_marks_predictions_past_the_trust_radius(tmp_path):
    items = response_items(n=20, cubic=0.5, quartic=12.0, seed=6)  # a quartic the probe cannot pin down
    run = _write_run(tmp_path / "probe", items, [-0.25, -0.125, 0.0, 0.125, 0.25])
    blocks = run_response(run, norms=GRID, target_h=0.125, n_boot=0)
    radius = blocks["qa"]["trust_radius"]
    assert radius is not None and 0.25 < radius < 1.0
    write_response(run, ResponseFile.model_validate(
        {"command": None, "predicted_norms": GRID, "tasks": blocks}))
    rows = {line.split(" | ")[0].strip("| "): line
            for line in build_prediction_summary(run).read_text().splitlines() if line.startswith("| ")}
    for r in GRID:
        cell = rows[f"{r:g}"].split(" | ")[1]
        assert cell.endswith(" †") == bool(abs(r) > radius), (r, cell)


def _hand_window(curve: dict, loss: float = 0.15) -> tuple[float, float]:
    """The run of grid norms around 0 whose value is within ``loss`` of the value at 0."""
    norms = sorted(curve)
    i = norms.index(0.0)
    lo = hi = i
    while lo > 0 and curve[0.0] - curve[norms[lo - 1]] <= loss:
        lo -= 1
    while hi + 1 < len(norms) and curve[0.0] - curve[norms[hi + 1]] <= loss:
        hi += 1
    return norms[lo], norms[hi]


@pytest.mark.parametrize("cubic, quartic", [(0.0, 0.0), (0.5, 12.0)])
def test_the_summary_says_whether_the_trust_radius_covers_the_loss_window(tmp_path, cubic, quartic):
    items = response_items(n=20, cubic=cubic, quartic=quartic, seed=6)
    run = _write_run(tmp_path / "probe", items, [-0.25, -0.125, 0.0, 0.125, 0.25])
    blocks = run_response(run, norms=GRID, target_h=0.125, n_boot=0)
    write_response(run, ResponseFile.model_validate(
        {"command": None, "predicted_norms": GRID, "tasks": blocks}))
    pred = {p.norm: p.mean for p in read_predicted(run) if p.task == "qa" and p.metric == "helpfulness"}
    lo, hi = _hand_window(pred)
    radius = blocks["qa"]["trust_radius"]  # None: agrees as far as it was checked
    line = next(x for x in build_prediction_summary(run).read_text().splitlines()
                if x.startswith("- qa: predicted P(correct) stays within 0.15"))
    assert f"for r in [{lo:g}, {hi:g}]" in line
    covered = radius is None or max(-lo, hi) <= radius
    assert ("inside the trust radius" in line) == covered
    assert ("sweep those norms before relying on it" in line) == (not covered)
    if not covered:
        assert quartic > 0  # only the curve the probe cannot pin down reaches past its radius


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_predict_matches_a_sweep_on_the_embedded_model(embedded, tmp_path):
    """`predict` from 5 probe norms against a 9-norm sweep of the same 12 questions.

    Tolerance: on 48 questions the prediction is within RMSE ~0.003 of the measured curve where
    helpfulness falls by at most 0.15 (docs/methods.md, the response model); with 12 questions one item's error
    weighs four times as much, so 0.02 on each norm of that window leaves room without hiding
    a wrong expansion (the first-order one misses by 0.045 RMSE on the same window).
    """
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models.loading import middle_layers, n_layers
    from repe_tradeoff.vectors.reading import extract
    from repe_tradeoff.workflows.predict import run_predict
    from repe_tradeoff.workflows.prepare import prepare_sweep
    from repe_tradeoff.workflows.settings import SweepSettings
    from repe_tradeoff.workflows.sweep import run_sweep

    pairs = [(p.aligned, p.misaligned) for p in load_behavior("harmfulness").pairs[:24]]
    layers = middle_layers(n_layers(embedded.model))
    vector, _ = extract(embedded.model, embedded.tokenizer, pairs, layers)
    settings = SweepSettings(norms="-0.05:0.05:0.0125", norm_unit="residual", limit=12,
                             helpfulness=["basic-qa"], behaviors=["harmfulness"])
    plan, config = prepare_sweep(embedded, settings, vector, layers, model_name="default", command=None)
    run_sweep(embedded.model, embedded.tokenizer, vector, plan, tmp_path / "sweep", config=config, limit=12)
    run_predict(embedded, settings, vector, layers, tmp_path / "predict", model_name="default", n_boot=20)
    measured = {(p["task"], p["metric"], round(p["norm"], 6)): p["mean"]
                for p in map(json.loads, (tmp_path / "sweep" / "points.jsonl").read_text().splitlines())}
    probe_cfg = json.loads((tmp_path / "predict" / "config.json").read_text())["probe"]
    assert probe_cfg["fraction_of_residual"] == pytest.approx(0.0125)
    # the probe run measures what the sweep measures at the shared norms (to float32 rounding:
    # the two batch their rows differently)
    probe_points = map(json.loads, (tmp_path / "predict" / "points.jsonl").read_text().splitlines())
    for p in probe_points:
        expected = measured[(p["task"], p["metric"], round(p["norm"], 6))]
        assert p["mean"] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    pred = {round(p.norm, 6): p.mean for p in read_predicted(tmp_path / "predict")
            if p.task == "basic-qa" and p.metric == "helpfulness"}
    base = measured[("basic-qa", "helpfulness", 0.0)]
    window = [r for (t, m, r), v in measured.items()
              if t == "basic-qa" and m == "helpfulness" and base - v <= 0.15]
    assert len(window) >= 5
    errors = [abs(pred[r] - measured[("basic-qa", "helpfulness", r)]) for r in window]
    assert max(errors) <= 0.02, dict(zip(window, errors))
