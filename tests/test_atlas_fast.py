"""The atlas' default plan: which bands it screens, passes kept within the row budget, the
bracketing confirmation grid and the measured recommendation — each against a hand-written
reference or plain per-entry scoring."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from repe_tradeoff.data import load_behavior
from repe_tradeoff.engine.layer_sets import AtlasRunner, Entry, PointLayout
from repe_tradeoff.engine.scoring import TaskSequences, score
from repe_tradeoff.engine.steering import Steering
from repe_tradeoff.models.loading import load_model
from repe_tradeoff.runs import read_atlas
from repe_tradeoff.runs.schema.atlas import AtlasConfirmation, AtlasEstimate
from repe_tradeoff.vectors.vector import SteeringVector
from repe_tradeoff.workflows.atlas import atlas_entries, measured_best, run_atlas
from repe_tradeoff.workflows.atlas_plan import (
    AtlasPlan,
    AtlasPlanError,
    bracket_norms,
    exhaustive,
    parse_probe_items,
)
from repe_tradeoff.workflows.prepare import build_tasks
from repe_tradeoff.workflows.settings import BehaviorSpec, HelpfulnessSpec, SweepSettings
from tests.helpers import cli_env, save_tiny_model, tiny_model

BUDGET = 0.002


def test_bands_every_stride_layers_and_the_topmost():
    labels = [e.label for e in atlas_entries(list(range(30)), [1, 4, 8], 0.1, stride=2)]
    singles = [str(i) for i in range(30)]
    fours = [f"{s}-{s + 3}" for s in range(0, 27, 2)]  # 0-3 … 26-29: the topmost falls on the stride
    eights = [f"{s}-{s + 7}" for s in range(0, 23, 2)]  # 0-7 … 22-29
    assert sorted(labels) == sorted(singles + fours + eights)
    # a stride that misses the top still measures the topmost band; gaps start a new run
    assert [e.label for e in atlas_entries([0, 1, 2, 3, 4, 5, 6, 9, 10, 11], [3], 0.1, stride=3)] == \
        ["0-2", "3-5", "4-6", "9-11"]
    assert len(atlas_entries(list(range(30)), [1, 4, 8], 0.1, stride=1)) == 30 + 27 + 23


def test_plan_settings_are_checked_with_the_fix_in_the_message():
    assert parse_probe_items("16,32") == {"alignment": 16, "helpfulness": 32}
    assert parse_probe_items("all") == {"alignment": None, "helpfulness": None}
    with pytest.raises(AtlasPlanError, match="whole number of items or all"):
        parse_probe_items("16,many")
    with pytest.raises(AtlasPlanError, match="e.g. 16,32"):
        parse_probe_items("1,2,3")
    with pytest.raises(AtlasPlanError, match="not one of bracket, auto"):
        AtlasPlan(confirm_plan="grid")
    with pytest.raises(AtlasPlanError, match="two or more items"):
        AtlasPlan(probe_items={"alignment": 1, "helpfulness": 8})
    capped = AtlasPlan().with_limit(20)
    assert dict(capped.probe_items) == {"alignment": 16, "helpfulness": 20} and capped.confirm_items == 20
    assert dict(exhaustive().with_limit(6).probe_items) == {"alignment": 6, "helpfulness": 6}


def test_bracket_grid_around_the_predicted_norm():
    row = {"probe_h": 0.0125, "norm_at_budget": {"value": 0.4, "low": 0.3, "high": None}}
    assert bracket_norms(row) == [-0.0125, 0.0, 0.0125, 0.1, 0.2, 0.3, 0.4, 0.5]
    unseen = {"probe_h": 0.01, "norm_at_budget": {"value": None, "low": None, "high": None}}
    assert bracket_norms(unseen) == pytest.approx([-0.01, 0.0, 0.01, 0.16, 0.32, 0.48, 0.64, 0.8])


def _sequences(seed=5):
    g = torch.Generator().manual_seed(seed)
    prompts, continuations, owners = [], [], []
    for item, length in enumerate((6, 9, 7)):
        prompt = torch.randint(1, 256, (length,), generator=g).tolist()
        for n in (1, 2, 3):  # three continuations per prompt, as a question's options
            prompts.append(prompt)
            continuations.append(torch.randint(1, 256, (n,), generator=g).tolist())
            owners.append(item)
    return TaskSequences(prompts, continuations, probe_ids=[4, 8], owners=owners)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_runner_keeps_passes_within_the_row_budget_and_equals_plain_scoring(arch, monkeypatch):
    import repe_tradeoff.engine.layer_sets as scoring_module

    model = tiny_model(arch)
    g = torch.Generator().manual_seed(3)
    vector = SteeringVector({layer: torch.randn(32, generator=g) for layer in range(4)})
    entries = tuple(sorted((Entry((0,), 0.5), Entry((0, 1), 0.7), Entry((1,), 1.1), Entry((1, 2), 0.4),
                            Entry((2,), 0.9), Entry((2, 3), 0.6), Entry((3,), 1.5)), key=lambda e: e.start))
    layout = PointLayout(entries)  # 15 points
    passes = []
    real = scoring_module.score_entries

    def counting(model, pad, prompts, continuations, vector, layout, **kw):
        passes.append(len(prompts) * layout.size)
        return real(model, pad, prompts, continuations, vector, layout, **kw)

    monkeypatch.setattr(scoring_module, "score_entries", counting)
    seqs = _sequences()
    runner = AtlasRunner(model, None, vector, layout, rows_per_pass=5)
    runner.tokenizer = type("Tok", (), {"pad_token_id": 0})()
    got = runner.score(seqs, list(range(len(seqs.prompts))))
    # a prompt's 3 sequences × 15 points exceed SPLIT_FACTOR × 5 rows: groups of 2 entries (5 points)
    assert passes and max(passes) <= scoring_module.SPLIT_FACTOR * 5 and len(passes) == 3 * 4
    for e, entry in enumerate(entries):
        band = SteeringVector({layer: vector[layer] for layer in entry.layers})
        want = score(model, 0, seqs.prompts, seqs.continuations, [0.0, entry.h, -entry.h],
                     Steering(band, entry.layers), seqs.probe_ids)
        cols = [0, 1 + 2 * e, 2 + 2 * e]
        torch.testing.assert_close(got.continuation[:, cols], want.continuation, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.probe_logprobs[:, cols], want.probe_logprobs, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.logit_shift[:, cols], want.logit_shift, atol=1e-4, rtol=1e-4)


def _est(value):
    return AtlasEstimate(value=value, low=None if value is None else value - 0.1,
                         high=None if value is None else value + 0.1)


def test_measured_best_is_the_largest_measured_gain():
    conf = [AtlasConfirmation(layers=layers, run=f"confirm/{layers}", alignment_slope=_est(1.0),
                              norm_at_budget=_est(norm), alignment_gain_at_budget=_est(gain))
            for layers, norm, gain in (("3-6", 0.2, 0.21), ("14", 0.3, 0.35), ("8-15", None, None))]
    best, line = measured_best(conf, 0.05)
    assert best == "14" and "measured at r = 0.3" in line and "0.350 [0.250, 0.450]" in line
    assert measured_best(conf[2:], 0.05) is None


def _measured_gain(items: list[dict], budget: float) -> tuple[float, float] | None:
    """Plain numpy: the first norm ≥ 0 where mean P(correct) has lost ``budget`` (linear
    interpolation), and the mean alignment gained there."""
    def mean_by_norm(kind, field):
        rows = [r for r in items if r["kind"] == kind and r["norm"] >= 0]
        norms = sorted({r["norm"] for r in rows})
        return np.array(norms), np.array([np.mean([r[field] for r in rows if r["norm"] == x]) for x in norms])

    norms, help_ = mean_by_norm("helpfulness", "helpfulness")
    _, align = mean_by_norm("alignment", "alignment")
    drop = help_[0] - help_
    hit = np.flatnonzero(drop >= budget)
    if not hit.size:
        return None
    i = hit[0]
    r = norms[i - 1] + (budget - drop[i - 1]) / (drop[i] - drop[i - 1]) * (norms[i] - norms[i - 1])
    return r, float(np.interp(r, norms, align) - align[0])


def test_default_plan_end_to_end_confirms_on_the_bracket_and_recommends_the_measured_best(tmp_path_factory):
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny"))
    lm = load_model(str(folder))
    settings = SweepSettings(norms="0", behaviors=[BehaviorSpec(name="harmfulness")],
                             helpfulness=[HelpfulnessSpec(spec="basic-qa")])
    pairs = [(p.aligned, p.misaligned) for p in load_behavior("harmfulness").pairs][:30]
    out = tmp_path_factory.mktemp("atlas")
    plan = AtlasPlan(band_stride=2, probe_items={"alignment": 4, "helpfulness": 6}, confirm=2, confirm_items=5)
    run_atlas(lm, settings, pairs, out, layers=[0, 1, 2, 3], widths=[1, 3], budget=BUDGET, probe_fraction=0.05,
              n_boot=30, tasks=build_tasks(settings), model_name=str(folder), behavior="harmfulness", plan=plan)
    atlas = read_atlas(out)
    assert sorted(e.layers for e in atlas.entries) == ["0", "0-2", "1", "1-3", "2", "3"]
    assert atlas.n_items == {"harmfulness": 4, "basic-qa": 6} and atlas.band_stride == 2
    probes = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    assert len({r["item"] for r in probes if r["kind"] == "alignment"}) == 4
    ranked = [e for e in atlas.entries if e.rank is not None][:2]
    assert [c.layers for c in atlas.confirmations] == [e.layers for e in ranked]
    gains = {}
    for conf, entry in zip(atlas.confirmations, ranked):
        row = {"probe_h": entry.probe_h, "norm_at_budget": entry.norm_at_budget.model_dump()}
        assert conf.norms == pytest.approx(bracket_norms(row))
        items = [json.loads(line) for line in (out / conf.run / "items.jsonl").read_text().splitlines()]
        assert sorted({r["norm"] for r in items}) == pytest.approx(conf.norms) and conf.n_items == 5
        want = _measured_gain(items, BUDGET)
        if want is None:
            assert conf.alignment_gain_at_budget.value is None
        else:
            assert conf.norm_at_budget.value == pytest.approx(want[0], rel=1e-6)
            assert conf.alignment_gain_at_budget.value == pytest.approx(want[1], rel=1e-5, abs=1e-7)
            gains[conf.layers] = want[1]
    if gains:
        assert atlas.best_from == "measured" and atlas.best == max(gains, key=gains.get)
        assert "measured" in atlas.recommendation
    assert atlas.cost.confirm_seconds is not None and atlas.confirm_plan == "bracket"
    assert "norms around each entry" in (out / "atlas.html").read_text()


def test_cli_rejects_bad_item_counts_before_loading_a_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "repe_tradeoff", "atlas", "--probe-items", "16,lots",
                           "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, env=cli_env(), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--probe-items '16,lots': give a whole number of items or all" in proc.stdout + proc.stderr
