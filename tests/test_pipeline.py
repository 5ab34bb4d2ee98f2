"""A study over several models from one config: one experiment folder per model, each model's
own vector and sweep, one comparison report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repe_tradeoff.models.loading import parse_layers
from repe_tradeoff.vectors.vector import SteeringVector
from repe_tradeoff.workflows.settings import ConfigError, StudyConfig, load_config
from repe_tradeoff.workflows.study import Experiment, experiments, run_study
from tests.helpers import save_tiny_model


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [str(save_tiny_model(root / "tiny-llama", "llama")), str(save_tiny_model(root / "tiny-qwen2", "qwen2"))]


def _config(models, out, **extra) -> StudyConfig:
    return StudyConfig(model=models, out=out, norms="-1,0,1", norm_unit="absolute", limit=2,
                     fit={"n_boot": 5}, max_new_tokens=2, **extra)


def test_models_are_a_grid_dimension(two_models, tmp_path):
    cfg = _config(two_models, tmp_path / "study", layer_sets=["1-2", "2"])
    exps = experiments(cfg)
    assert [(e.model, e.layer_set) for e in exps] == [(m, ls) for m in two_models for ls in ("1-2", "2")]
    assert len({e.slug for e in exps}) == 4 and all(e.slug.startswith(("tiny-llama-", "tiny-qwen2-")) for e in exps)

    report, runs = run_study(cfg)
    assert report == cfg.out / "report.html" and report.exists()
    for exp, run in zip(exps, runs):
        assert run == cfg.out / exp.slug
        config = json.loads((run / "config.json").read_text())
        assert config["model"] == exp.model and config["layer_set"] == exp.layer_set
        points = [json.loads(x) for x in (run / "points.jsonl").read_text().splitlines()]
        assert {p["norm"] for p in points} == {-1.0, 0.0, 1.0}
        assert (run / "report.html").exists()
        vector = SteeringVector.load(run / "vector.safetensors")  # read from this experiment's model
        assert vector.metadata["model"] == exp.model and vector.layers == parse_layers(exp.layer_set, 4)
    html = report.read_text()
    assert all(e.slug in html for e in exps)


def test_experiment_folders_keep_the_model_name_whole():
    exp = Experiment("harmfulness", "middle", "pca", "meta-llama/Llama-3.1-8B", name_model=True)
    assert exp.slug == "Llama-3.1-8B-harmfulness-middle-pca"
    assert Experiment("harmfulness", "8-15", "pca", "/m/SmolLM2.Q4_1.gguf", name_model=True).slug == (
        "SmolLM2.Q4_1-harmfulness-8-15-pca")


def test_models_with_the_same_folder_name_are_refused(tmp_path):
    cfg = _config([str(tmp_path / "a" / "model"), str(tmp_path / "b" / "model")], tmp_path / "study")
    with pytest.raises(ConfigError, match="share a run folder"):
        experiments(cfg)


def test_a_model_listed_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match="each once"):
        _config(["default", "default"], tmp_path)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    cfg = load_config(path)
    assert experiments(cfg) and (cfg.auto or cfg.grid())  # a grid, or norms: auto


def test_a_combine_config_runs_the_joint_experiment_beside_the_single_ones(tmp_path):
    model = str(save_tiny_model(tmp_path / "tiny-llama", "llama"))
    cfg = _config(model, tmp_path / "study", behaviors=["harmfulness", "fairness"],
                  combine=["harmfulness", "fairness"], layer_sets=["1-2"], baseline_prompt="none")
    _, runs = run_study(cfg)
    assert [r.name for r in runs] == ["harmfulness-1-2-pca", "fairness-1-2-pca"]
    joint = cfg.out / "joint-harmfulness_fairness-1-2-pca"
    items = [json.loads(x) for x in (joint / "items.jsonl").read_text().splitlines()]
    assert {(r["norms"]["harmfulness"], r["norms"]["fairness"]) for r in items} == {
        (a, b) for a in (-1.0, 0.0, 1.0) for b in (-1.0, 0.0, 1.0)}
    assert {r["task"] for r in items} >= {"harmfulness", "fairness", "basic-qa"}  # every behavior scored
    # The joint run steers with the two experiments' own vectors: its (r, 0) slice is the
    # harmfulness experiment's sweep, item by item.
    single = [json.loads(x) for x in (runs[0] / "items.jsonl").read_text().splitlines()]
    on_axis = {(r["task"], r["norms"]["harmfulness"], r["item"]): r for r in items if r["norms"]["fairness"] == 0.0}
    for rec in single:
        other = on_axis[(rec["task"], rec["norm"], rec["item"])]
        for key in ("alignment", "helpfulness"):
            if key in rec:
                assert other[key] == pytest.approx(rec[key], rel=1e-5, abs=1e-6)
    fits = json.loads((joint / "fits.json").read_text())
    assert [r["vector"] for r in fits["off_target"]] == ["harmfulness", "fairness"]
    assert set(fits["off_target"][0]["slopes"]) == {"harmfulness", "fairness"}
    assert fits["joint"]["surfaces"]["basic-qa"]["params"] is not None
    assert (joint / "report.html").exists()
