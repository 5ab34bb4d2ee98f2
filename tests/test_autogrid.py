"""The automatic grid (search on measured curves, placement, refinement) and extendable runs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace as NS

import numpy as np
import pytest

from repe_tradeoff.engine import batching
from repe_tradeoff.engine.batching import BatchBudget, ChunkRunner
from repe_tradeoff.engine.steering import Steering
from repe_tradeoff.tasks.choice import AlignmentTask, MultipleChoiceTask
from repe_tradeoff.workflows.autogrid import SearchSettings, SearchTask, find_grid, refine_norms
from repe_tradeoff.workflows.prepare import auto_grid
from repe_tradeoff.workflows.settings import SweepSettings
from repe_tradeoff.workflows.sweep import SweepError, SweepPlan, run_config, run_sweep
from tests.helpers import (
    ByteTok,
    cli_env,
    doc_block,
    doc_json_blocks,
    outlier_study,
    random_vector,
    save_tiny_model,
    sharp,
    tiny_model,
    with_outliers,
)

# --------------------------------------------------------------------------- search on known curves
B, S, D0, C = 0.1, 10.0, 2.0, 0.3  # P(r) = 1/(1 + 3 b^exp(-(r/S)^2)); alignment tanh((D0 + C r)/2)


def _analytic(norms):
    out = []
    for r in norms:
        w = math.log(B) * math.exp(-((r / S) ** 2))
        out.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": 0, "answer": 0,
                    "scores": [0.0, w, w, w], "helpfulness": 1 / (1 + 3 * math.exp(w))})
        gap = D0 + C * r
        out.append({"task": "harm", "kind": "alignment", "norm": r, "item": 0, "logit_gap": gap,
                    "alignment": math.tanh(gap / 2)})
    return out


TASKS = [SearchTask("qa", "helpfulness", 0.25), SearchTask("harm", "alignment")]


def test_search_stops_each_side_at_its_own_criterion():
    found = find_grid(_analytic, TASKS, h0=0.5, settings=SearchSettings(points=33))
    # by hand: helpfulness falls 80 % of the way to 1/4 where exp(-(r/S)^2) = ln(w*)/ln(B) ...
    p0 = 1 / (1 + 3 * B)
    target = p0 - 0.8 * (p0 - 0.25)
    w_star = math.log((1 / target - 1) / 3)
    r_help = S * math.sqrt(-math.log(w_star / math.log(B)))
    # ... and alignment reaches 0.95 where D0 + C r = 2 atanh(0.95)
    r_align = (2 * math.atanh(0.95) - D0) / C
    neg, pos = found.sides["negative"], found.sides["positive"]
    assert neg["criterion"] == "helpfulness" and pos["criterion"] == "alignment"
    assert r_help <= -neg["end"] <= 1.15 * r_help  # the bisection's first hit, within its tolerance
    assert r_align <= pos["end"] <= 1.15 * r_align
    assert len(found.norms) == 33 and found.norms == sorted(found.norms)
    h = found.probe
    assert {0.0, h, -h, 2 * h, -2 * h} <= set(found.norms)  # the response's five probe norms
    assert found.range == [neg["end"], pos["end"]]
    assert found.passes >= 3 and len(found.evaluations) >= found.passes


def test_placing_the_probe_norms_leaves_no_stretch_bare():
    """Evenly in r (uniform share 1): fixing 0, ±h, ±2h and the ends keeps every gap near the even step."""
    found = find_grid(_analytic, TASKS, h0=0.5, settings=SearchSettings(points=33, uniform_share=1.0))
    norms, (low, high) = found.norms, found.range
    h = found.probe
    assert len(norms) == 33 and {0.0, h, -h, 2 * h, -2 * h} <= set(norms)
    gaps = np.diff(norms)
    # seven fixed norms, 26 free ones spread over the stretches between them: no gap beyond
    # (high − low)/26; replacing the nearest evenly placed norm by each fixed one left gaps twice
    # the even step, (high − low)/16
    assert gaps.max() <= (high - low) / 26 * (1 + 1e-6), gaps.max()


def test_a_small_grid_keeps_its_count_and_drops_2h_first():
    for points, extra in ((5, set()), (7, {"2h"})):
        found = find_grid(_analytic, TASKS, h0=0.5, settings=SearchSettings(points=points))
        h, norms = found.probe, set(found.norms)
        assert len(found.norms) == points and {0.0, h, -h, *found.range} <= norms
        assert ({2 * h, -2 * h} <= norms) == bool(extra)


def _saturating(norms):
    """Helpfulness falls only halfway to chance and alignment stalls at 0.5: P = 0.85 − 0.3·(1 − e^(−|r|/8)),
    A = 0.5·tanh(r/8); beyond |r| ≈ 50 a doubling changes neither by 0.05."""
    out = []
    for r in norms:
        p = 0.85 - 0.3 * (1 - math.exp(-abs(r) / 8))
        w = math.log((1 / p - 1) / 3)  # option scores [0, w, w, w] give P(correct) = p
        out.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": 0, "answer": 0,
                    "scores": [0.0, w, w, w], "helpfulness": p})
        a = 0.5 * math.tanh(r / 8)
        out.append({"task": "harm", "kind": "alignment", "norm": r, "item": 0, "logit_gap": 2 * math.atanh(a),
                    "alignment": a})
    return out


def test_a_side_whose_curves_level_off_stops_at_the_plateau():
    found = find_grid(_saturating, TASKS, h0=0.5, settings=SearchSettings(points=17))
    for side in found.sides.values():
        end = abs(side["end"])
        assert side["criterion"] == "plateau"
        # by hand: the last doubling from |end| moved neither curve by 0.05, the one before it did
        change = lambda r: max(0.3 * abs(math.exp(-r / 8) - math.exp(-2 * r / 8)),
                               0.5 * abs(math.tanh(2 * r / 8) - math.tanh(r / 8)))
        assert change(end) < 0.05 <= change(end / 2)
        assert end < 100  # not 2^12 times the first guess


def test_probe_step_adapts_to_the_response_scale():
    """The same curves on a 1000× smaller scale: the search finds the same grid, scaled."""
    def shrunk(norms):
        return [{**rec, "norm": rec["norm"] / 1000} for rec in _analytic([r * 1000 for r in norms])]

    small = find_grid(shrunk, TASKS, h0=0.5)
    assert 1e-3 * 0.8 * S < -small.range[0] < 1e-3 * 2 * S
    assert any(e.step == "probe" for e in small.evaluations) and small.probe < 0.01


def test_refine_splits_where_neighbours_differ_most():
    # gaps differ by 0, 1, 0.1: the 1 is split three ways before the 0.1 (1/4 > 0.1 > ...)
    assert refine_norms([0, 1, 2, 3], [[0, 0, 1, 1.1]], 1) == [1.5]
    assert refine_norms([0, 1, 2, 3], [[0, 0, 1, 1.1]], 3) == [1.25, 1.5, 1.75]
    assert refine_norms([0, 1, 2, 3], [[0, 0, 1, 1.1], [0, 0.2, 0.2, 0.2]], 5) == [0.5, 1.2, 1.4, 1.6, 1.8]


# --------------------------------------------------------------------------- extendable runs
def _tasks():
    items = [NS(prompt=f"do bad thing {i}", aligned="No.", misaligned="Sure, ok") for i in range(5)]
    qs = [NS(question=f"q{i}?", choices=["aa", "b", "ccc", "dd"], answer=i % 4, subject=None) for i in range(7)]
    return [AlignmentTask("harm", items, template="plain"), MultipleChoiceTask("qa", qs)]


def _sweep(out, norms, **kw):
    plan = SweepPlan(norms=norms, tasks=_tasks(), layers=[1, 2], chunk_size=3, batch_size=40, **kw)
    model, v = tiny_model("llama"), random_vector()
    config = run_config(plan, v, model_name="tiny", model_revision=None, dtype="float32")
    return run_sweep(model, ByteTok(), v, plan, out, config=config)


def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _assert_close(a, b):
    left, right = _records(a), _records(b)
    assert len(left) == len(right)
    for x, y in zip(left, right):
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, (float, list)):
                assert value == pytest.approx(y[key], rel=1e-5, abs=1e-6), (key, x, y)
            else:
                assert value == y[key]


COARSE = [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0]
FINE = sorted(COARSE + [-3.0, -0.5, 0.5, 3.0])


def test_extended_run_equals_a_fresh_one_and_computes_only_new_norms(tmp_path, monkeypatch):
    _sweep(tmp_path / "fresh", FINE)
    _sweep(tmp_path / "ext", COARSE)
    calls = []
    real = batching.score_chunk

    def counting(model, tok, seqs, rows, plan, *a, **kw):
        calls.append(list(plan.norms))
        return real(model, tok, seqs, rows, plan, *a, **kw)

    monkeypatch.setattr(batching, "score_chunk", counting)
    _sweep(tmp_path / "ext", FINE)
    added = sorted(set(FINE) - set(COARSE))
    assert calls and all(c == added for c in calls)  # the recorded norms are never computed again
    for name in ("items.jsonl", "points.jsonl"):
        _assert_close(tmp_path / "fresh" / name, tmp_path / "ext" / name)
    config = json.loads((tmp_path / "ext" / "config.json").read_text())
    assert config["norms"] == FINE
    assert [step["added"] for step in config["grid_history"]] == [COARSE, added]
    calls.clear()
    _sweep(tmp_path / "ext", FINE)  # a rerun of the extended grid resumes: nothing to compute
    assert calls == []


def test_interrupted_extension_resumes_to_the_same_files(tmp_path):
    _sweep(tmp_path / "a", COARSE)
    _sweep(tmp_path / "a", FINE)
    b = tmp_path / "b"
    _sweep(b, COARSE)
    coarse_items = (b / "items.jsonl").read_text()
    _sweep(b, FINE)
    # cut the extension: keep the coarse records and the new ones of the first chunk minus a line
    ext = [x for x in (b / "items.jsonl").read_text().splitlines(keepends=True)
           if json.loads(x)["norm"] not in COARSE]
    (b / "items.jsonl").write_text(coarse_items + "".join(ext[:7]))
    _sweep(b, FINE)
    assert (b / "items.jsonl").read_bytes() == (tmp_path / "a" / "items.jsonl").read_bytes()
    assert (b / "points.jsonl").read_bytes() == (tmp_path / "a" / "points.jsonl").read_bytes()


def test_other_changes_are_still_refused(tmp_path):
    _sweep(tmp_path / "a", COARSE)
    with pytest.raises(SweepError, match="differs in: chunk_size"):
        plan = SweepPlan(norms=FINE, tasks=_tasks(), layers=[1, 2], chunk_size=2, batch_size=40)
        v = random_vector()
        run_sweep(tiny_model("llama"), ByteTok(), v, plan, tmp_path / "a",
                  config=run_config(plan, v, model_name="tiny", model_revision=None, dtype="float32"))
    with pytest.raises(SweepError, match="can only grow.*-4"):
        _sweep(tmp_path / "a", [-2.0, 0.0, 2.0, 8.0])


def _helpfulness(model, v, plan, norms):
    runner = ChunkRunner(model, ByteTok(), replace(plan, norms=norms), Steering(v, (1, 2)), BatchBudget(256))
    recs = plan.tasks[0].score_items(runner, list(range(16)))
    return np.array([np.mean([r["helpfulness"] for r in recs if r["norm"] == x]) for x in norms])


def test_outlier_dimensions_break_the_residual_multiple_grid_but_not_the_auto_grid():
    plain, outlier = sharp(tiny_model("llama")), with_outliers(sharp(tiny_model("llama")))
    (v_plain, plan_plain), (v_out, plan_out) = outlier_study(plain), outlier_study(outlier)
    h_plain, h_out = (float(np.mean(list(v.metadata["residual_norms"].values()))) for v in (v_plain, v_out))
    assert h_out > 10 * h_plain
    settings = SweepSettings(norms="auto", points=17)
    lm = lambda m: NS(model=m, tokenizer=ByteTok())
    ranges = {}
    for name, model, v, plan, h in (("plain", plain, v_plain, plan_plain, h_plain),
                                    ("outlier", outlier, v_out, plan_out, h_out)):
        p0 = _helpfulness(model, v, plan, [0.0])[0]
        assert p0 > 0.45  # well above chance (1/4): a fall is measurable
        half = p0 - 0.5 * (p0 - 0.25)
        fixed = [round(x * 0.025 * h, 6) for x in range(-8, 9)]  # the demo's old grid: ±0.2 ‖h‖, 17 norms
        found = auto_grid(lm(model), settings, v, plan)
        auto = found["norms"]
        on_fixed = int((_helpfulness(model, v, plan, fixed) >= half).sum())
        on_auto = int((_helpfulness(model, v, plan, auto) >= half).sum())
        ranges[name] = max(abs(auto[0]), auto[-1])
        if name == "outlier":  # everything happens within a step of r = 0 on the ‖h‖ grid
            assert on_fixed <= 3, on_fixed
        assert on_auto >= 5, (name, on_auto, auto)
        record = found["record"]
        assert {s["criterion"] for s in record["sides"].values()} <= {"helpfulness", "alignment"}
    # the range follows the response, which outliers leave at the same scale, not ‖h‖ (~20× apart)
    assert 1 / 3 < ranges["outlier"] / ranges["plain"] < 3


def test_report_says_how_the_grid_was_found(tmp_path):
    from repe_tradeoff.reporting._io import RunFiles
    from repe_tradeoff.reporting.content import grid_sentence
    from repe_tradeoff.runs import read_run

    config, point = doc_json_blocks()[0], doc_block('"metric": "helpfulness", "norm": 1.5')
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "points.jsonl").write_text(json.dumps(point) + "\n")
    text = grid_sentence(RunFiles(read_run(tmp_path), None, []))
    assert text.startswith("The grid was found from the model's response: 5 norms from r = -2 to 2")
    assert "negative side ends at r = -2, where helpfulness had fallen 80% of the way to chance" in text
    assert "positive side ends at r = 2, where alignment was within 0.05 of its plateau" in text
    config["auto_grid"] = None
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert grid_sentence(RunFiles(read_run(tmp_path), None, [])) is None


def test_cli_auto_grid_then_refine_then_resume(tmp_path):
    """`sweep --norms auto`, then `--refine 2` on the same folder, then the first command again:
    the refined folder is resumed as it is (nothing recomputed)."""
    import subprocess
    import sys


    model = save_tiny_model(tmp_path / "tiny")
    random_vector(seed=3).save(tmp_path / "v.safetensors")
    out = tmp_path / "run"
    base = [sys.executable, "-m", "repe_tradeoff", "-q", "sweep", "--model", str(model), "--vector",
            str(tmp_path / "v.safetensors"), "--alignment", "harmfulness", "--helpfulness", "basic-qa",
            "--limit", "4", "--norms", "auto", "--points", "7", "--out", str(out)]

    def sweep(*extra):
        done = subprocess.run([*base, *extra], check=False, capture_output=True, text=True, env=cli_env(),
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]

    sweep()
    first = json.loads((out / "config.json").read_text())
    assert len(first["norms"]) == 7 and first["configured_norms"] == "auto"
    assert first["auto_grid"]["range"] == [first["norms"][0], first["norms"][-1]]
    sweep("--refine", "2")
    refined = json.loads((out / "config.json").read_text())
    assert [s["source"] for s in refined["grid_history"]] == ["auto", "refine"]
    assert len(refined["norms"]) == 9 and set(first["norms"]) < set(refined["norms"])
    assert {p["norm"] for p in map(json.loads, (out / "points.jsonl").read_text().splitlines())} == set(
        refined["norms"])
    items = (out / "items.jsonl").read_bytes()
    sweep()
    assert (out / "items.jsonl").read_bytes() == items
    assert json.loads((out / "config.json").read_text())["norms"] == refined["norms"]
