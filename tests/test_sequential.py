"""The sequential plan: its stopping rules on known curves, the refit, and a run on a tiny model."""

from __future__ import annotations

import json
import math
import random
import shutil
from types import SimpleNamespace as NS

import numpy as np
import pytest

from repe_tradeoff.theory.response.refit import item_probabilities, refit_edge, refit_helpfulness
from repe_tradeoff.workflows.sequential import (
    Measured,
    PlanSettings,
    continuation_norms,
    next_step,
    recommended,
    summarize,
)
from tests.helpers import GenTok, sequential_setup

EDGE = math.sqrt(5.0)  # loss 0.01 r² reaches the budget 0.05 here


def _point(r: float, broken_at: float = 50.0) -> Measured:
    """Loss 0.01 r² on both sides, alignment tanh(r) (the aligned side is +), broken beyond 50."""
    return Measured(r, 0.01 * r * r, alignment=math.tanh(r), broken=abs(r) >= broken_at)


def _run_plan(settings: PlanSettings, predict=lambda points: None, point=_point):
    points, passes = {}, []
    for _ in range(30):
        step = next_step(points, settings, lambda h: predict(points))
        if step.done:
            return points, passes, step
        passes.append(dict(sorted(step.norms.items())))
        points.update({r: point(r) for r in step.norms})
    raise AssertionError("the plan did not stop")


def test_doubling_then_bisection_brackets_the_edge_as_computed_by_hand():
    points, passes, last = _run_plan(PlanSettings(budget=0.05, h=0.5))
    assert passes == [
        {-1.0: "probe", -0.5: "probe", 0.0: "probe", 0.5: "probe", 1.0: "probe"},
        {-4.0: "outward", 2.0: "bracket (doubling)", 4.0: "outward"},  # 2 = 2 × 1; ±4 = 4 × 1, beside the edge
        {-16.0: "outward", 3.0: "bisect", 16.0: "outward"},  # losses at 2: 0.04 (in), at 4: 0.16 (out): (2, 4]
        {-64.0: "outward", 2.5: "bisect", 64.0: "outward"},  # 3 loses 0.09: (2, 3]
        {2.25: "bisect"},  # ±64 are broken: both sides stop; (2, 2.5]
        {2.125: "bisect"},  # 2.25 loses 0.0506: (2, 2.25]
        {2.1875: "bisect"},  # 2.125 loses 0.0452: (2.125, 2.25]
    ]
    assert last.stopped == {"edge": "bracket", "misaligned": "breakdown", "aligned": "breakdown"}
    assert last.bracket == (2.1875, 2.25)
    assert recommended(points, 0.05) == 2.1875  # the most alignment within the budget
    assert 2.1875 >= 0.9 * EDGE
    assert continuation_norms(points, 2.1875) == [-64.0, 0.0, 2.1875, 64.0]


def test_a_predicted_edge_is_bracketed_in_two_measurements():
    _points, passes, last = _run_plan(PlanSettings(budget=0.05, h=0.5), predict=lambda points: EDGE)
    aim = round(EDGE * 1.04, 5)  # just past the prediction: loss 0.0541, out of budget
    assert sorted(passes[1]) == [-4.0, pytest.approx(aim, rel=1e-5), 4.0]  # ±4: outward, beside the edge
    # (1, 2.3255]: the prediction clipped to the bracket's middle 80 % is 2.3255 − 0.1 × 1.3255
    assert sorted(passes[2]) == [-16.0, pytest.approx(aim - 0.1 * (aim - 1.0), rel=1e-5), 16.0]
    lo, hi = last.bracket
    assert hi - lo <= 0.05 * hi and lo <= EDGE < hi
    edge_norms = [r for p in passes for r, why in p.items() if why not in ("probe", "outward")]
    assert len(edge_norms) <= 4


def test_noise_stops_bisection_when_both_ends_are_within_their_intervals():
    def noisy(r):  # intervals ±0.01 around the loss
        p = _point(r)
        return Measured(r, p.loss, p.loss - 0.01, p.loss + 0.01, p.alignment, p.broken)

    _points, _passes, last = _run_plan(PlanSettings(budget=0.05, h=0.5), point=noisy)
    # (2, 2.25]: loss 0.04 ∈ [0.03, 0.05] and 0.0506 ∈ [0.0406, 0.0606], width 11 % ≤ 15 %
    assert last.stopped["edge"] == "noise" and last.bracket == (2.0, 2.25)


def test_the_aligned_side_follows_alignment_and_the_plan_ignores_order():
    mirror = lambda r: Measured(r, 0.01 * r * r, alignment=-math.tanh(r), broken=abs(r) >= 50)
    points, _passes, last = _run_plan(PlanSettings(budget=0.05, h=0.5), point=mirror)
    assert last.bracket == (-2.1875, -2.25) and recommended(points, 0.05) == -2.1875
    keys = list(points)
    random.Random(0).shuffle(keys)
    shuffled = {k: points[k] for k in keys}
    s = PlanSettings(budget=0.05, h=0.5)
    assert next_step(shuffled, s).norms == next_step(points, s).norms == {}


def test_no_loss_within_reach_and_a_plateau_stop():
    flat = lambda r: Measured(r, 0.0, alignment=math.tanh(r))
    points, _passes, last = _run_plan(PlanSettings(budget=0.05, h=0.5, max_doublings=5), point=flat)
    assert last.stopped["edge"] == "no-loss" and max(points) >= 0.5 * 2**5
    assert last.stopped["misaligned"] == "plateau"  # tanh is flat (±1) from −4 to −16


# --------------------------------------------------------------------------- from records
def _records():
    rng = np.random.default_rng(1)
    out = []
    for r in (0.0, 1.0, 2.0):
        for i in range(6):
            out.append({"task": "qa", "norm": r, "item": i, "helpfulness": float(rng.uniform(0.2, 1.0))})
            out.append({"task": "harm", "norm": r, "item": i, "alignment": float(np.tanh(r + i / 10)),
                        "response_logprob": -1.0 - 2.0 * r})
            out.append({"task": "flu", "norm": r, "item": i, "kl": 1.5 * r})
    return out


def test_summarize_pairs_the_loss_over_items_and_marks_broken_norms():
    records = _records()
    points, p0 = summarize(records, helpfulness="qa", alignment="harm", fluency=["flu"], n_boot=500, seed=3)
    h = {r: np.array([x["helpfulness"] for x in records if x["task"] == "qa" and x["norm"] == r]) for r in (0, 1, 2)}
    assert p0 == pytest.approx(h[0].mean())
    diffs = h[0] - h[2]
    assert points[2.0].loss == pytest.approx(diffs.mean())
    boots = diffs[np.random.default_rng(3).integers(0, 6, size=(500, 6))].mean(axis=1)
    assert points[2.0].loss_low == pytest.approx(np.percentile(boots, 2.5))
    assert points[2.0].loss_high == pytest.approx(np.percentile(boots, 97.5))
    # KL 1.5 at r = 1 (≤ 2), 3.0 at r = 2; the likelier response lost 2 and 4 nats per token (limit ln 10)
    assert [points[r].broken for r in (0.0, 1.0, 2.0)] == [False, False, True]


# --------------------------------------------------------------------------- the refit
def _margin_records(norms, f, n_items=5):
    """Two options; the wrong one's margin is f(r, i), the answer's 0: P = 1 / (1 + e^f)."""
    out = []
    for r in norms:
        for i in range(n_items):
            u = f(r, i)
            out.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": i, "answer": 0,
                        "scores": [0.0, u], "helpfulness": 1 / (1 + math.exp(u))})
    return out


def test_a_quadratic_response_is_predicted_exactly_and_its_edge_found():
    f = lambda r, i: -1.0 - 0.1 * i + 0.05 * r * r
    refit = refit_helpfulness(_margin_records([-1, -0.5, 0, 0.5, 1], f), "qa", 0.5)
    r = np.linspace(-6, 6, 13)
    truth = np.array([[1 / (1 + math.exp(f(x, i))) for x in r] for i in range(5)])
    assert np.allclose(item_probabilities(refit, r), truth, atol=1e-9)
    p0 = truth[:, 6].mean()
    dense = np.linspace(0, 10, 100001)
    curve = np.mean([[1 / (1 + math.exp(f(x, i))) for x in dense] for i in range(5)], axis=0)
    expected = dense[np.argmax(p0 - curve > 0.05)]
    assert refit_edge(refit, 1.0, 0.05, reach=10.0) == pytest.approx(expected, abs=1e-3)


def test_the_refit_passes_through_every_measured_norm_and_improves_between_them():
    f = lambda r, i: -1.5 + 0.3 * r + 0.2 * r * r - 0.02 * abs(r) ** 3 + 0.05 * i
    probe = [-1, -0.5, 0, 0.5, 1]
    more = [2.0, 3.0, 4.0]
    truth = lambda x: np.mean([1 / (1 + math.exp(f(x, i))) for i in range(5)])
    probe_only = refit_helpfulness(_margin_records(probe, f), "qa", 0.5)
    refit = refit_helpfulness(_margin_records(probe + more, f), "qa", 0.5)
    measured = item_probabilities(refit, more).mean(axis=0)
    assert measured == pytest.approx([truth(x) for x in more], abs=1e-12)
    between = [2.5, 3.5]
    err_refit = max(abs(item_probabilities(refit, [x]).mean() - truth(x)) for x in between)
    err_probe = max(abs(item_probabilities(probe_only, [x]).mean() - truth(x)) for x in between)
    assert err_refit < 0.01 < err_probe


def test_a_broken_norm_left_out_does_not_bend_the_refit_towards_zero():
    f = lambda r, i: -1.5 + 0.3 * r + 0.2 * r * r - 0.02 * abs(r) ** 3 + 0.05 * i
    broken = lambda r, i: f(r, i) if abs(r) < 10 else 40.0  # at ±16 the margins have collapsed
    records = _margin_records([-1, -0.5, 0, 0.5, 1, 2.0, -16.0, 16.0], broken)
    truth = lambda x: np.mean([1 / (1 + math.exp(f(x, i))) for i in range(5)])
    kept = refit_helpfulness(records, "qa", 0.5)
    left = refit_helpfulness(records, "qa", 0.5, leave_out=[-16.0, 16.0])
    assert list(left.norms) == [-1, -0.5, 0, 0.5, 1, 2.0]
    x = 4.0  # between the last sound norm and the broken one
    error = lambda refit: abs(item_probabilities(refit, [x]).mean() - truth(x))  # noqa: E731
    assert error(left) < 0.02 < 0.1 < error(kept)  # 0.017 against 0.148


# --------------------------------------------------------------------------- a run on a tiny model


def _sequential_sweep(out, model, v, tasks):
    from repe_tradeoff.workflows.prepare import prepare_sweep
    from repe_tradeoff.workflows.settings import SweepSettings
    from repe_tradeoff.workflows.sweep import run_sweep

    lm = NS(model=model, tokenizer=GenTok(), revision=None)
    settings = SweepSettings(norms="auto", norm_unit="absolute", batch_size=256, chunk_size=4)
    plan, config = prepare_sweep(lm, settings, v, [1, 2], model_name="tiny", command=None, tasks=list(tasks),
                                 out=out, budget="0.05")
    run_sweep(model, GenTok(), v, plan, out, config=config)
    return plan, config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny model, its vector and tasks, and one uninterrupted sequential sweep of them."""
    model, v, tasks = sequential_setup()
    out = tmp_path_factory.mktemp("sequential") / "a"
    _sequential_sweep(out, model, v, tasks)
    return model, v, tasks, out


def test_a_sequential_sweep_writes_run_files_that_fit_and_report_read(tiny_run):
    from repe_tradeoff.reporting import build_report
    from repe_tradeoff.theory import fit_run

    *_, out = tiny_run
    cfg = json.loads((out / "config.json").read_text())
    seq = cfg["sequential"]
    grid = cfg["norms"]
    assert seq["norms_measured"] == len(grid) < 33
    assert sorted(float(r) for p in seq["passes"] for r in p["norms"]) == grid
    assert all(step["source"] == "sequential" for step in cfg["grid_history"])
    assert [sorted(map(float, p["norms"])) for p in seq["passes"]] == [s["added"] for s in cfg["grid_history"]]
    assert {seq["stopped"]["edge"]["reason"]} <= {"bracket", "noise", "steps", "no-loss"}
    items = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    for task, n in (("harm", 6), ("qa", 16), ("fluency-x", 3)):
        assert sorted({r["norm"] for r in items if r["task"] == task}) == grid
        assert len([r for r in items if r["task"] == task]) == n * len(grid)
    flu = [r for r in items if r["task"] == "fluency-x"]
    assert all(r["kl"] is not None for r in flu)
    continued = {r["norm"] for r in flu if r["perplexity"] is not None}
    assert continued == set(seq["continuations"]) and 0.0 in continued and len(continued) < len(grid)
    by_norm = {}
    for r in items:
        if r["task"] == "qa":
            by_norm.setdefault(r["norm"], []).append(r["helpfulness"])
    p = {r: sum(v) / len(v) for r, v in by_norm.items()}
    lo, hi = seq["bracket"]
    assert seq["recommended"] == lo != 0.0  # the steered behavior gains up to the edge
    width = {"bracket": 0.05, "noise": 0.15}[seq["stopped"]["edge"]["reason"]]
    assert p[0.0] - p[lo] <= 0.05 < p[0.0] - p[hi] and abs(hi - lo) <= width * abs(hi) + 1e-9
    fits = fit_run(out)
    assert fits["recommendation"]["norm"] == seq["recommended"]  # fit's budget rule on the measured points
    build_report(out)
    assert (out / "report.html").is_file()
    assert seq["summary"].startswith(f"{len(grid)} norms measured")


def test_an_interrupted_sequential_sweep_resumes_to_the_same_files(tiny_run, tmp_path, monkeypatch):
    from repe_tradeoff.workflows import sweep as sweep_module

    model, v, tasks, a = tiny_run
    real, calls = sweep_module.run_sweep, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # the third pass stops half-way: a chunk of it is written, then a crash
            real(*args, **kw)
            path = tmp_path / "b" / "items.jsonl"
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(lines[: len(lines) - 5]))
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(sweep_module, "run_sweep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _sequential_sweep(tmp_path / "b", model, v, tasks)
    monkeypatch.setattr(sweep_module, "run_sweep", real)
    _sequential_sweep(tmp_path / "b", model, v, tasks)
    for name in ("items.jsonl", "points.jsonl"):
        assert (tmp_path / "b" / name).read_bytes() == (a / name).read_bytes(), name
    first, second = (json.loads((x / "config.json").read_text()) for x in (a, tmp_path / "b"))
    assert first["norms"] == second["norms"] and first["sequential"]["passes"] == second["sequential"]["passes"]
    shutil.rmtree(tmp_path / "b")


def test_a_probe_that_already_loses_the_budget_is_shrunk_eightfold():
    _points, passes, last = _run_plan(PlanSettings(budget=0.05, h=8.0))
    assert passes[:2] == [{-16.0: "probe", -8.0: "probe", 0.0: "probe", 8.0: "probe", 16.0: "probe"},  # ±8 loses 0.64
                          {-2.0: "probe", -1.0: "probe", 1.0: "probe", 2.0: "probe"}]  # ±1 loses 0.01 ≤ 0.05 / 4
    assert last.h == 1.0 and last.bracket[0] <= EDGE < last.bracket[1] <= 1.05 * last.bracket[0] + 1e-9


def test_a_probe_a_little_too_large_is_halved_and_keeps_its_norms():
    _points, passes, last = _run_plan(PlanSettings(budget=0.05, h=2.0))
    # ±2 loses 0.04 = 3.2 × a quarter of the budget: one halving (⌈log2 √3.2⌉ = 1), the old ±2 are the new ±2h
    assert passes[:2] == [{-4.0: "probe", -2.0: "probe", 0.0: "probe", 2.0: "probe", 4.0: "probe"},
                          {-1.0: "probe", 1.0: "probe"}]
    assert last.h == 1.0
