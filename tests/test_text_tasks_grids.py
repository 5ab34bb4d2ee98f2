"""The text tasks beside the other kinds of sweep: the generate scorer's lengths, joint grids,
the automatic grid search and break-down shading on an uneven grid."""

from __future__ import annotations

import json
from itertools import product
from types import SimpleNamespace as NS

import numpy as np
import pytest

from repe_tradeoff.data import BehaviorItem, ShortAnswerQuestion
from repe_tradeoff.tasks.choice import MultipleChoiceTask, alignment_task
from repe_tradeoff.tasks.text import ExactMatchTask, FluencyTask
from repe_tradeoff.workflows.sweep import SweepPlan, run_config, run_sweep
from tests.helpers import (
    NEUTRAL_PASSAGES,
    TEXT_LAYERS,
    greedy_by_hand,
    random_vector,
    save_tiny_model,
)

QUESTIONS = [ShortAnswerQuestion(question="What is 2 + 2?", answers=["4"], category="arithmetic"),
             ShortAnswerQuestion(question="Capital of France?", answers=["Paris"], category="capitals")]


def _rows(run, name="items.jsonl") -> list[dict]:
    return [json.loads(x) for x in (run / name).read_text().splitlines()]


def test_generate_scorer_records_each_reply_length_and_its_mean(tiny, tmp_path):
    """generated_tokens of the generate scorer = the hand-decoded greedy reply's tokens before
    the end of sequence; points.jsonl holds their mean over items at each norm."""
    items = [BehaviorItem(prompt=p, aligned="No.", misaligned="Yes.") for p in ("Say hi.", "Tell me a joke.")]
    task = alignment_task("harm", items, "generate", "plain")
    vector, norms = random_vector(TEXT_LAYERS, seed=5), [-2.0, 0.0, 3.0]
    plan = SweepPlan(norms=norms, tasks=[task], layers=list(TEXT_LAYERS), chunk_size=2, batch_size=7, max_new_tokens=6)
    out = tmp_path / "run"
    run_sweep(tiny.model, tiny.tokenizer, vector, plan, out,
              config=run_config(plan, vector, model_name="tiny", model_revision=None, dtype="float32"))
    eos = tiny.tokenizer.eos_token_id
    lengths: dict[float, list[int]] = {}
    for rec in _rows(out):
        ids = tiny.tokenizer(f"User: {items[rec['item']].prompt}\nAssistant:")["input_ids"]
        cont = greedy_by_hand(tiny, ids, rec["norm"], 6)
        assert rec["generated_tokens"] == (cont.index(eos) if eos in cont else len(cont)), rec
        lengths.setdefault(rec["norm"], []).append(rec["generated_tokens"])
    means = {p["norm"]: p["mean"] for p in _rows(out, "points.jsonl") if p["metric"] == "generated_tokens"}
    assert means == pytest.approx({r: float(np.mean(v)) for r, v in lengths.items()})


def test_joint_sweep_of_text_tasks_equals_the_one_vector_sweep_on_each_axis(tiny, tmp_path):
    """On a joint grid (r_A, r_B), the points with r_B = 0 are the one-vector sweep of A: kl,
    perplexity and exact match alike; the fit of the joint run has no break-down entry."""
    from repe_tradeoff.theory import fit_run

    tasks = [FluencyTask("fluency", NEUTRAL_PASSAGES[:2], max_new_tokens=5),
             ExactMatchTask("sa", QUESTIONS, "plain", max_new_tokens=5)]
    a, b, grid = random_vector(TEXT_LAYERS, seed=1), random_vector(TEXT_LAYERS, seed=2), [-2.0, 0.0, 2.0]
    joint_plan = SweepPlan(norms=list(product(grid, [0.0, 1.5])), tasks=tasks, layers=list(TEXT_LAYERS), chunk_size=2,
                           batch_size=16, vector_names=["A", "B"])
    run_sweep(tiny.model, tiny.tokenizer, [a, b], joint_plan, tmp_path / "joint",
              config=run_config(joint_plan, [a, b], model_name="tiny", model_revision=None, dtype="float32"))
    one_plan = SweepPlan(norms=grid, tasks=tasks, layers=list(TEXT_LAYERS), chunk_size=2, batch_size=16)
    run_sweep(tiny.model, tiny.tokenizer, a, one_plan, tmp_path / "one",
              config=run_config(one_plan, a, model_name="tiny", model_revision=None, dtype="float32"))
    joint = {(r["task"], r["norms"]["A"], r["item"]): r for r in _rows(tmp_path / "joint") if r["norms"]["B"] == 0.0}
    single = _rows(tmp_path / "one")
    assert len(joint) == len(single)
    for rec in single:
        other = joint[(rec["task"], rec["norm"], rec["item"])]
        for key in ("kl", "perplexity", "exact_match", "generated_tokens", "response"):
            if key in rec:
                assert other[key] == (pytest.approx(rec[key], rel=1e-4, abs=1e-6)
                                      if isinstance(rec[key], float) else rec[key]), key
    steered_b = [r for r in _rows(tmp_path / "joint") if r["task"] == "fluency" and r["norms"] == {"A": 0.0, "B": 1.5}]
    assert steered_b and all(r["kl"] > 1e-4 for r in steered_b)  # B alone moves the distributions
    assert fit_run(tmp_path / "joint", n_boot=0)["breakdown"] is None


def test_auto_grid_searches_on_the_likelihood_tasks_only(tiny):
    """The text tasks are left out of the grid search: with them the search finds the grid it
    finds without them, from the same evaluations."""
    from repe_tradeoff.data import load_helpfulness
    from repe_tradeoff.workflows.prepare import auto_grid
    from repe_tradeoff.workflows.settings import SweepSettings

    qa = MultipleChoiceTask("basic-qa", list(load_helpfulness("basic-qa").questions)[:4])
    text = [ExactMatchTask("sa", QUESTIONS, "plain", max_new_tokens=4),
            FluencyTask("fluency", NEUTRAL_PASSAGES, max_new_tokens=4)]
    settings = SweepSettings(norms="auto", points=7, search_items=4)
    found = []
    for tasks in ([qa], [qa, *text]):
        plan = SweepPlan(norms=[0.0], tasks=tasks, layers=list(TEXT_LAYERS), batch_size=64)
        vector = random_vector(TEXT_LAYERS, seed=3)
        found.append(auto_grid(NS(model=tiny.model, tokenizer=tiny.tokenizer), settings, vector, plan))
    assert found[1]["norms"] == found[0]["norms"]
    assert found[1]["record"]["evaluations"] == found[0]["record"]["evaluations"]


def test_breakdown_shading_on_an_uneven_grid(tmp_path):
    """Shading starts halfway between the last fluent norm and the first broken one, however
    unevenly the norms are spaced (as on an automatic grid)."""
    from matplotlib.figure import Figure

    from repe_tradeoff.reporting import load_run
    from repe_tradeoff.reporting.plots import breakdown_decor
    from repe_tradeoff.runs import write_jsonl, write_points
    from repe_tradeoff.theory import fit_run

    norms = [-30.0, -11.0, -4.0, -1.0, 0.0, 0.7, 2.5, 9.0, 26.0]
    rows = [{"task": "fluency-neutral", "kind": "fluency", "norm": r, "item": i,
             "kl": (5.0 if r <= -11.0 or r >= 26.0 else 0.01 * abs(r)) + 0.001 * i, "perplexity": 3.0 + 0.1 * i}
            for r in norms for i in range(3)]
    rows += [{"task": "qa", "kind": "helpfulness", "norm": r, "item": i, "helpfulness": 0.7 - 0.001 * r * r + 0.01 * i}
             for r in norms for i in range(3)]
    write_jsonl(tmp_path / "items.jsonl", rows)
    write_points(tmp_path)
    bd = fit_run(tmp_path, n_boot=0)["breakdown"]
    assert (bd["negative"]["norm"], bd["negative"]["last_fluent"]) == (-11.0, -4.0)
    assert (bd["positive"]["norm"], bd["positive"]["last_fluent"]) == (26.0, 9.0)
    ax = Figure().subplots()
    breakdown_decor(ax, load_run(tmp_path), -30.0, 26.0)
    spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches)
    assert spans == [pytest.approx((-30.0 - 1e-9, -7.5)), pytest.approx((17.5, 26.0 + 1e-9))]


def test_text_tasks_have_no_second_order_response_and_no_warning_about_it(tmp_path):
    """kl, perplexity and exact match have no option scores to expand: the response stage skips
    them without a warning, and still answers the multiple-choice task beside them."""
    from repe_tradeoff.runs import write_jsonl, write_points
    from repe_tradeoff.theory import fit_run

    norms = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    rows = []
    for r in norms:
        for i in range(3):
            scores = [-1.0 - 0.1 * r * r, -2.0 + 0.2 * r, -2.5 - 0.1 * r, -3.0 + 0.05 * i]
            rows.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": i, "answer": 0, "scores": scores,
                         "helpfulness": 0.6 - 0.02 * r * r + 0.01 * i})
            rows.append({"task": "sa", "kind": "helpfulness", "norm": r, "item": i, "exact_match": float(i == 0),
                         "generated_tokens": 5})
            rows.append({"task": "fluency-neutral", "kind": "fluency", "norm": r, "item": i, "kl": 0.1 * abs(r),
                         "perplexity": 3.0})
    write_jsonl(tmp_path / "items.jsonl", rows)
    write_points(tmp_path)
    fits = fit_run(tmp_path, n_boot=0)
    assert not [w for w in fits["warnings"] if "second-order" in w and ("sa" in w or "fluency" in w)]
    assert fits["tasks"]["qa"]["response"] is not None


def test_a_study_like_the_demo_runs_with_text_tasks(tmp_path):
    """The demo's path on a tiny model: an automatic grid, short-answer and fluency beside the
    forced-choice and multiple-choice tasks, fits, the prompting baseline (which re-scores the
    alignment and helpfulness tasks with its instruction, not the neutral text) and the report."""
    from repe_tradeoff.workflows.settings import StudyConfig
    from repe_tradeoff.workflows.study import run_study

    model = str(save_tiny_model(tmp_path / "tiny"))
    cfg = StudyConfig(model=model, out=tmp_path / "study", norms="auto", points=5, search_items=2, limit=2,
                    layer_sets=["1-2"], helpfulness=["basic-qa", "short-answer"], fluency=["neutral"],
                    fit={"n_boot": 5}, max_new_tokens=2)
    report, (run,) = run_study(cfg)
    assert report.exists()
    config = json.loads((run / "config.json").read_text())
    assert config["configured_norms"] == "auto" and len(config["norms"]) == 5
    assert [t["kind"] for t in config["tasks"]] == ["alignment", "helpfulness", "helpfulness", "fluency"]
    points = {(p["task"], p["metric"]) for p in _rows(run, "points.jsonl")}
    assert {("short-answer", "exact_match"), ("fluency-neutral", "kl"), ("fluency-neutral", "perplexity")} <= points
    assert "breakdown" in json.loads((run / "fits.json").read_text())
    baseline = json.loads((run / "baseline" / "config.json").read_text())
    assert [t["name"] for t in baseline["tasks"]] == ["harmfulness", "basic-qa", "short-answer"]
    assert all(t.get("instruction") for t in baseline["tasks"])
    assert (run / "plots" / "fluency.png").is_file()
