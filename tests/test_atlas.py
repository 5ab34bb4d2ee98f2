"""The layer atlas end to end on a tiny model: its numbers recomputed from the probe scores with
plain numpy (finite differences of the predicted curves, a root finder), its separation with
plain transformers and sklearn, its files and its confirmation sweep."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from repe_tradeoff.data import load_behavior
from repe_tradeoff.models.loading import load_model
from repe_tradeoff.runs import read_atlas
from repe_tradeoff.runs.schema.atlas import ATLAS_METRICS
from repe_tradeoff.workflows.atlas import AtlasError, atlas_entries, parse_widths, run_atlas
from repe_tradeoff.workflows.atlas_plan import exhaustive
from repe_tradeoff.workflows.prepare import build_tasks
from repe_tradeoff.workflows.settings import BehaviorSpec, HelpfulnessSpec, SweepSettings
from tests.helpers import doc_block, save_tiny_model

BUDGET = 0.002


@pytest.fixture(scope="module")
def atlas_run(tmp_path_factory):
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny"))
    lm = load_model(str(folder))
    settings = SweepSettings(norms="0", limit=6, behaviors=[BehaviorSpec(name="harmfulness")],
                             helpfulness=[HelpfulnessSpec(spec="basic-qa")])
    pairs = [(p.aligned, p.misaligned) for p in load_behavior("harmfulness").pairs][:40]
    out = tmp_path_factory.mktemp("atlas")
    run_atlas(lm, settings, pairs, out, layers=[0, 1, 2, 3], widths=[1, 2], budget=BUDGET, probe_fraction=0.05,
              plan=exhaustive(confirm=1), n_boot=50, tasks=build_tasks(settings), model_name=str(folder),
              behavior="harmfulness")
    return lm, pairs, out


def _probe_table(rows, label, field):
    """{item: {norm: value}} of one entry (its ±h rows and the shared r = 0 rows)."""
    out: dict = {}
    for r in rows:
        if r.get(field) is not None and (r["layers"] is None or r["layers"] == label):
            out.setdefault(r["item"], {})[r["norm"]] = r[field]
    return out


def test_entry_numbers_recomputed_from_the_probe_scores(atlas_run):
    _, _, out = atlas_run
    atlas = read_atlas(out)
    rows = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    entry = next(e for e in atlas.entries if e.width == 2 and e.norm_at_budget.value is not None)
    h = entry.probe_h
    scores = _probe_table([r for r in rows if r["kind"] == "helpfulness"], entry.layers, "scores")
    answers = {r["item"]: r["answer"] for r in rows if r["kind"] == "helpfulness"}
    gaps = _probe_table([r for r in rows if r["kind"] == "alignment"], entry.layers, "logit_gap")
    s = {k: np.array([scores[q][k] for q in sorted(scores)]) for k in (-h, 0.0, h)}
    ans = np.array([answers[q] for q in sorted(scores)])
    d = {k: np.array([gaps[q][k] for q in sorted(gaps)]) for k in (-h, 0.0, h)}
    g, c = (s[h] - s[-h]) / (2 * h), (s[h] + s[-h] - 2 * s[0.0]) / h**2
    dg, dc = (d[h] - d[-h]) / (2 * h), (d[h] + d[-h] - 2 * d[0.0]) / h**2

    def helpfulness(r, curvature=1.0):
        z = s[0.0] + r * g + curvature * r * r * c / 2
        p = np.exp(z - z.max(1, keepdims=True))
        return float((p[np.arange(len(ans)), ans] / p.sum(1)).mean())

    def alignment(r):
        return float(np.tanh((d[0.0] + r * dg + r * r * dc / 2) / 2).mean())

    eps = 1e-3 * h
    second = lambda f: (f(eps) + f(-eps) - 2 * f(0.0)) / (2 * eps**2)  # the r² coefficient
    quadratic, spread = second(helpfulness), second(lambda r: helpfulness(r, 0.0))
    slope = (alignment(eps) - alignment(-eps)) / (2 * eps)
    dense = np.linspace(0, 64 * h, 20001)
    loss = np.array([helpfulness(0.0) - helpfulness(r) for r in dense]) - BUDGET
    first = int(np.argmax(loss >= 0))
    norm = brentq(lambda r: helpfulness(0.0) - helpfulness(r) - BUDGET, dense[first - 1], dense[first])
    gain = alignment(norm) - alignment(0.0)
    assert entry.alignment_slope.value == pytest.approx(slope, rel=1e-3, abs=1e-6)
    assert entry.helpfulness_curvature.value == pytest.approx(quadratic, rel=1e-3, abs=1e-6)
    assert entry.spread.value == pytest.approx(spread, rel=1e-3, abs=1e-6)
    assert entry.drift.value == pytest.approx(quadratic - spread, rel=1e-3, abs=1e-6)
    assert entry.norm_at_budget.value == pytest.approx(norm, rel=2e-3)
    assert entry.alignment_gain_at_budget.value == pytest.approx(gain, rel=1e-2, abs=1e-6)
    for m in ATLAS_METRICS:
        est = getattr(entry, m)
        if est.low is not None and est.high is not None:
            assert est.low <= est.high


def test_single_layer_separation_matches_plain_transformers_and_sklearn(atlas_run):
    from sklearn.metrics import roc_auc_score

    from repe_tradeoff.vectors.reading import orient, pca_direction

    lm, pairs, out = atlas_run
    layer = 2
    entry = next(e for e in read_atlas(out).entries if e.layers == str(layer))

    def last_state(text):
        ids = lm.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = lm.model(**ids, output_hidden_states=True).hidden_states[layer + 1]
        return hidden[0, -1].float()

    a = torch.stack([last_state(p[0]) for p in pairs])
    m = torch.stack([last_state(p[1]) for p in pairs])
    n = len(pairs)
    order = np.random.default_rng(0).permutation(n)
    test, train = order[: round(n * 0.2)], order[round(n * 0.2):]
    v = orient(pca_direction(a[train], m[train]), a[train], m[train])
    pa, pm = (a @ v).numpy(), (m @ v).numpy()
    threshold = (pa[train].mean() + pm[train].mean()) / 2
    accuracy = ((pa[test] > threshold).mean() + (pm[test] <= threshold).mean()) / 2
    auc = roc_auc_score(np.r_[np.ones(len(test)), np.zeros(len(test))], np.r_[pa[test], pm[test]])
    assert entry.separation_accuracy.value == pytest.approx(accuracy, abs=1e-9)
    assert entry.separation_effect.value == pytest.approx(auc, abs=1e-6)


def test_files_ranking_and_confirmation(atlas_run):
    _, _, out = atlas_run
    atlas = read_atlas(out)
    assert [e.layers for e in sorted(atlas.entries, key=lambda e: (e.width, e.first))] == \
        ["0", "1", "2", "3", "0-1", "1-2", "2-3"]
    gains = [e.alignment_gain_at_budget.value for e in atlas.entries if e.rank is not None]
    assert gains == sorted(gains, reverse=True) and [e.rank for e in atlas.entries[: len(gains)]] == list(
        range(1, len(gains) + 1))
    assert atlas.best == atlas.entries[0].layers and atlas.best in atlas.recommendation
    with open(out / "atlas.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["layers"] for r in table] == [e.layers for e in atlas.entries]
    assert {"alignment_slope_low", "norm_at_budget_high", "separation_effect"} <= set(table[0])
    assert (out / "atlas.html").read_text().count("<tr>") >= len(atlas.entries) + 1
    assert (out / "plots" / "atlas_heatmap.png").stat().st_size > 0
    assert (out / "plots" / "atlas_gain_vs_separation.png").stat().st_size > 0
    (confirmed,) = atlas.confirmations
    assert confirmed.layers == atlas.best and (out / confirmed.run / "points.jsonl").is_file()
    config = json.loads((out / confirmed.run / "config.json").read_text())
    assert config["layers"] == list(range(atlas.entries[0].first, atlas.entries[0].last + 1))
    assert config["auto_grid"] and len(config["norms"]) >= 5
    assert atlas.cost.block_rows_per_sequence == 4 * 1 + 2 * sum(4 - e.first for e in atlas.entries)


def test_bands_and_widths_are_checked():
    assert parse_widths("8, 1,4", 30) == [1, 4, 8]
    with pytest.raises(AtlasError, match="whole numbers"):
        parse_widths("1,four", 30)
    with pytest.raises(AtlasError, match="between 1 and the 4 layers"):
        parse_widths("1,8", 4)
    assert [e.label for e in atlas_entries([2, 3, 4, 7, 8], [1, 2], 0.1)] == ["2", "2-3", "3", "3-4", "4", "7", "7-8", "8"]
    with pytest.raises(AtlasError, match="no band of widths"):
        atlas_entries([1, 3, 5], [2], 0.1)


def test_a_run_config_can_let_the_atlas_pick_its_layers(tmp_path):
    """`layer_sets: [atlas]`: the experiment steers the atlas' best band (an atlas on disk is reused)."""
    from repe_tradeoff.runs import write_atlas
    from repe_tradeoff.runs.schema.atlas import AtlasFile
    from repe_tradeoff.workflows.atlas import atlas_layers
    from repe_tradeoff.workflows.settings import StudyConfig
    from repe_tradeoff.workflows.study import experiments

    cfg = StudyConfig.model_validate({"layer_sets": ["atlas", "middle"]})
    assert [e.layer_set for e in experiments(cfg)] == ["atlas", "middle"]
    write_atlas(tmp_path, AtlasFile.model_validate(doc_block('"probe_fraction"')))
    assert atlas_layers(None, cfg, [], tmp_path, behavior="harmfulness", model_name="default") == [8, 9, 10, 11]
