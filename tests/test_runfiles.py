"""The run-folder files: writing, reading, aggregation, and docs/run-files.md against the schema."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pydantic
import pytest
from pydantic import BaseModel

from repe_tradeoff.runs import (
    RunFileError,
    aggregate,
    atomic_write,
    chance_level,
    read_fits,
    read_jsonl,
    read_points,
    read_predicted,
    read_response,
    read_run,
    task_items,
    write_points,
    write_predicted,
    write_response,
)
from repe_tradeoff.runs import schema as run_schema
from repe_tradeoff.runs.schema import (
    AlignmentResponseBlock,
    BaselineFile,
    FitsFile,
    HelpfulnessResponseBlock,
    PredictedPoint,
    ResponseFile,
    RunConfig,
)
from tests.helpers import doc_block, doc_json_blocks

DOC = Path(__file__).resolve().parents[1] / "docs" / "run-files.md"


def _items(rng: np.random.Generator) -> list[dict]:
    """Raw items of two tasks, one norm with a single item (stderr 0)."""
    rows = []
    for r in (-1.0, 0.0, 2.5):
        for q in range(7):
            rows.append({"task": "harm", "kind": "alignment", "norm": r, "item": q,
                         "alignment": float(rng.uniform(-1, 1)), "logit_gap": 9.0})
        for q in range(1 if r == 2.5 else 5):
            rows.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": q, "answer": 1,
                         "scores": [-1.0, -0.5], "helpfulness": float(rng.uniform()),
                         "logit_shift": float(rng.uniform(0, 3))})
    return rows


# --------------------------------------------------------------------------- points
def test_aggregate_is_the_mean_and_standard_error_of_the_items():
    items = _items(np.random.default_rng(0))
    points = aggregate(items)
    seen = set()
    for p in points:
        vals = np.array([it[p["metric"]] for it in items
                         if it["task"] == p["task"] and it["norm"] == p["norm"]])
        assert p["n"] == vals.size
        assert p["mean"] == pytest.approx(vals.sum() / vals.size, abs=1e-9)
        se = 0.0 if vals.size == 1 else math.sqrt(
            ((vals - vals.mean()) ** 2).sum() / (vals.size - 1) / vals.size)
        assert p["stderr"] == pytest.approx(se, abs=1e-9)
        seen.add((p["task"], p["metric"], p["norm"]))
    # every recorded metric at every norm, and nothing else (logit_gap is not aggregated)
    assert seen == {(t, m, r) for t, ms in (("harm", ["alignment"]),
                                             ("qa", ["helpfulness", "logit_shift"]))
                    for m in ms for r in (-1.0, 0.0, 2.5)}
    # tasks in run order, then metrics in registry order, then norms
    keys = [(p["task"], p["metric"], p["norm"]) for p in points]
    assert keys[:3] == [("harm", "alignment", r) for r in (-1.0, 0.0, 2.5)]
    assert keys[3][:2] == ("qa", "helpfulness") and keys[-1][:2] == ("qa", "logit_shift")


def test_points_written_from_items_read_back_as_curves(tmp_path):
    items = _items(np.random.default_rng(1))
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    write_points(tmp_path)
    warnings: list[str] = []
    curves, kinds = read_points(tmp_path / "points.jsonl", warnings)
    assert kinds == {"harm": "alignment", "qa": "helpfulness"} and not warnings
    c = curves[("qa", "helpfulness")]
    assert c.norms.tolist() == [-1.0, 0.0, 2.5]
    by_norm = {r: [x["helpfulness"] for x in items if x["task"] == "qa" and x["norm"] == r]
               for r in c.norms}
    np.testing.assert_allclose(c.mean, [np.mean(by_norm[r]) for r in c.norms], atol=1e-9)
    np.testing.assert_allclose(c.n, [len(by_norm[r]) for r in c.norms])
    assert c.at(0.0) == pytest.approx(np.mean(by_norm[0.0]), abs=1e-9) and c.at(7.0) is None


def test_items_become_per_task_arrays(tmp_path):
    items = _items(np.random.default_rng(2))
    tasks = task_items(items, tmp_path / "items.jsonl")
    qa = tasks["qa"]
    assert qa.values["helpfulness"].shape == (5, 3)
    assert np.isnan(qa.values["helpfulness"][1:, 2]).all()  # one item at r = 2.5
    assert qa.option_count() == 2 and tasks["harm"].option_count() is None
    assert qa.answers.tolist() == [1] * 5


def test_hand_written_points_need_metric_norm_mean(tmp_path):
    path = tmp_path / "points.jsonl"
    path.write_text('{"metric": "helpfulness", "norm": 0, "mean": 0.5}\n\n{"metric": "x"}\n')
    with pytest.raises(RunFileError, match=r"points.jsonl:3: missing `norm`"):
        read_points(path, [])
    path.write_text('{"metric": "helpfulness", "norm": 0, "mean": "high"}\n')
    with pytest.raises(RunFileError, match="`mean` must be a number, got 'high'"):
        read_points(path, [])
    path.write_text('[1, 2]\n')
    with pytest.raises(RunFileError, match=":1: expected one JSON object per line"):
        read_jsonl(path)


# --------------------------------------------------------------------------- writing
def test_atomic_write_replaces_the_whole_file_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, "old\n")
    assert path.read_text() == "old\n"

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, b"new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temporary file left


# --------------------------------------------------------------------------- fits.json
def test_old_or_invalid_fits_are_refused_with_the_fix(tmp_path):
    (tmp_path / "fits.json").write_text(json.dumps({"format_version": 1, "alignment": {}}))
    with pytest.raises(RunFileError, match=r"format_version 1.*rerun `repe-tradeoff fit"):
        read_fits(tmp_path)
    doc_fits = doc_block('"settings"')
    doc_fits["tasks"]["basic-qa"]["k"] = "four"
    (tmp_path / "fits.json").write_text(json.dumps(doc_fits))
    with pytest.raises(RunFileError, match=r"`tasks.basic-qa.helpfulness.k`.*rerun"):
        read_fits(tmp_path)
    (tmp_path / "fits.json").write_text("{")
    with pytest.raises(RunFileError, match="not valid JSON"):
        read_fits(tmp_path)
    assert read_fits(tmp_path / "none") is None


def test_k_is_resolved_from_config_then_argument_then_items(tmp_path):
    (tmp_path / "points.jsonl").write_text(
        '{"task": "qa", "kind": "helpfulness", "metric": "helpfulness", "norm": 0, "mean": 0.5}\n')
    run = read_run(tmp_path)
    assert run.resolve_k("qa") == (4, run.resolve_k("qa")[1]) and "assumed k = 4" in run.resolve_k("qa")[1]
    assert run.resolve_k("qa", 3) == (3, None)
    (tmp_path / "items.jsonl").write_text(json.dumps(
        {"task": "qa", "kind": "helpfulness", "norm": 0, "item": 0, "answer": 0,
         "scores": [0.0, -1.0, -2.0, -3.0, -4.0]}) + "\n")
    assert read_run(tmp_path).resolve_k("qa") == (5, None)
    (tmp_path / "config.json").write_text(json.dumps(
        {"tasks": [{"name": "qa", "kind": "helpfulness", "n_choices": 2}]}))
    k, note = read_run(tmp_path).resolve_k("qa", 3)
    assert k == 2 and "config.json says k = 2" in note
    assert chance_level("helpfulness", 4) == 0.25 and chance_level("helpfulness_vocab", 4) == 0.0
    assert chance_level("logit_shift", 4) is None


def test_runfiles_import_without_torch():
    code = "import sys, repe_tradeoff.runs; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- the doc


def _models(root: type[BaseModel]) -> set[type[BaseModel]]:
    """Every model reachable from ``root`` through its field annotations."""
    found: set[type[BaseModel]] = set()

    def visit(tp) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in found:
            found.add(tp)
            for f in tp.model_fields.values():
                visit(f.annotation)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return found


def _undeclared(obj, where: str = "") -> list[str]:
    """Keys of nested models that their model does not declare (extras)."""
    out = []
    if isinstance(obj, BaseModel):
        out += [f"{where}.{k}" for k in (obj.__pydantic_extra__ or {})]
        for name in type(obj).model_fields:
            out += _undeclared(getattr(obj, name), f"{where}.{name}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += _undeclared(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for v in obj:
            out += _undeclared(v, where)
    return out


def test_doc_examples_are_valid_run_files(tmp_path):
    config, align_item, help_item, fluency_item, point, gens, baseline, fits, *_ = doc_json_blocks()
    assert BaselineFile.model_validate(baseline).row(True, True).norm == baseline["recommended_norm"]
    cfg = RunConfig.model_validate(config)
    # the config's nested entries hold only what the writers write (no `vector.path`)
    assert _undeclared(cfg.vector) == [] and _undeclared(cfg.norm_scale) == []
    assert all(_undeclared(t) == [] for t in cfg.tasks)
    items = task_items([align_item, help_item], tmp_path / "items.jsonl")
    assert items["basic-qa"].option_count() == 4
    fluency = task_items([fluency_item], tmp_path / "items.jsonl")["fluency-neutral"]
    assert fluency.kind == "fluency" and set(fluency.values) == {"kl", "perplexity", "generated_tokens"}
    assert aggregate([align_item, help_item])[0]["mean"] == align_item["alignment"]
    (tmp_path / "points.jsonl").write_text(json.dumps(point) + "\n")
    curves, _ = read_points(tmp_path / "points.jsonl", [])
    assert curves[("basic-qa", "helpfulness")].at(1.5) == point["mean"]
    assert isinstance(gens, list) and {"prompt", "norm", "text"} <= set(gens[0])
    model = FitsFile.model_validate(fits)
    assert set(model.tasks) == {c["name"] for c in config["tasks"]}


def test_every_field_of_the_schema_is_documented():
    text = DOC.read_text(encoding="utf-8")
    missing = []
    from repe_tradeoff.runs.schema.atlas import AtlasFile

    for model in (_models(FitsFile) | _models(RunConfig) | _models(BaselineFile) | _models(ResponseFile)
                  | _models(AtlasFile) | {PredictedPoint}):
        for name in run_schema.model_fields(model):
            if f"`{name}`" not in text and f'"{name}":' not in text:
                missing.append(f"{model.__name__}.{name}")
    assert not missing, f"fields not in docs/run-files.md: {missing}"


def test_doc_joint_examples_are_valid(tmp_path):
    """The joint-run examples: config keys, a record with `norms`, and the fits blocks."""
    from repe_tradeoff.runs import read_joint
    from repe_tradeoff.runs.schema import JointFits, OffTargetRow

    config, item, fits = doc_json_blocks()[-3:]  # the joint-run section ends the doc
    cfg = RunConfig.model_validate(config)
    assert [v.name for v in cfg.vectors] == ["harmfulness", "fairness"] and _undeclared(cfg.vectors) == []
    assert aggregate([item])[0]["norms"] == item["norms"]
    (tmp_path / "points.jsonl").write_text(json.dumps(aggregate([item])[0]) + "\n")
    joint = read_joint(tmp_path, ["harmfulness", "fairness"])
    assert joint.grid.tolist() == [[4.0, 0.0]]
    JointFits.model_validate(fits["joint"])
    [OffTargetRow.model_validate(r) for r in fits["off_target"]]


def test_doc_response_examples_are_valid(tmp_path):
    help_block, align_block, predicted, response = doc_json_blocks()[8:12]  # after fits.json
    assert HelpfulnessResponseBlock.model_validate(help_block).status == "pass"
    assert AlignmentResponseBlock.model_validate(align_block).slope_at_zero.value == 0.08
    write_predicted(tmp_path, [predicted])
    assert read_predicted(tmp_path)[0].model_dump() == predicted
    response["tasks"] = {"basic-qa": help_block, "harmfulness": align_block}
    write_response(tmp_path, ResponseFile.model_validate(response))
    assert read_response(tmp_path).tasks["harmfulness"].kind == "alignment"


def test_predicted_rows_missing_the_band_are_refused(tmp_path):
    row = {"task": "qa", "kind": "helpfulness", "metric": "helpfulness", "norm": 0.0, "mean": 0.5, "n": 3}
    with pytest.raises(pydantic.ValidationError):
        write_predicted(tmp_path, [row])
    (tmp_path / "predicted.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(RunFileError, match="predicted.jsonl"):
        read_predicted(tmp_path)


def test_doc_atlas_example_is_a_valid_atlas_file(tmp_path):
    from repe_tradeoff.runs import read_atlas, write_atlas
    from repe_tradeoff.runs.schema.atlas import AtlasFile

    atlas = AtlasFile.model_validate(doc_block('"probe_fraction"'))
    write_atlas(tmp_path, atlas)
    assert read_atlas(tmp_path) == atlas
    head, row = (tmp_path / "atlas.csv").read_text().splitlines()
    assert head.startswith("rank,layers,width,probe_h,alignment_slope,alignment_slope_low,alignment_slope_high")
    assert row.startswith("1,8-11,4,0.0125,2.1,1.6,2.7") and ",0.16,0.12,," in row
