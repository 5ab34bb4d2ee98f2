"""Several vectors at once: steering, the joint sweep, its files and the joint theory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repe_tradeoff.engine.steering import SteeringError, steer
from repe_tradeoff.runs import read_run
from repe_tradeoff.theory import fit_run
from repe_tradeoff.theory.laws.joint import fit_surface, local_slope
from repe_tradeoff.vectors.vector import SteeringVector, layer_cosines, orthogonalized
from repe_tradeoff.workflows.sweep import SweepPlan, run_config, run_sweep
from tests.helpers import ByteTok, random_vector, sweep_tasks, tiny_model


def _logits(model, ids, *args, **kw):
    with torch.no_grad(), steer(model, *args, **kw):
        return model(ids).logits


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_two_vectors_equal_their_weighted_sum(arch):
    """steer([A, B], [r1, r2]) is steering with the hand-made vector r1·A + r2·B at norm 1."""
    model = tiny_model(arch)
    a, b = random_vector(seed=1), random_vector(seed=2)
    ids = torch.randint(1, 255, (1, 7))
    for r1, r2 in [(2.0, 2.0), (1.5, -3.0), (0.0, 4.0)]:
        by_hand = SteeringVector({layer: r1 * a[layer] + r2 * b[layer] for layer in a.layers})
        torch.testing.assert_close(_logits(model, ids, [a, b], [r1, r2]), _logits(model, ids, by_hand, 1.0),
                                   rtol=1e-5, atol=1e-5)
    # each row its own pair of norms, in one batch
    rows = [(-2.0, 1.0), (0.5, 0.0), (3.0, -1.5)]
    batched = _logits(model, ids.repeat(3, 1), [a, b], [[p[0] for p in rows], [p[1] for p in rows]])
    for i, (r1, r2) in enumerate(rows):
        torch.testing.assert_close(batched[i : i + 1], _logits(model, ids, [a, b], [r1, r2]), rtol=1e-4, atol=1e-4)


def test_several_vectors_need_one_norm_each():
    model = tiny_model("llama")
    a, b = random_vector(seed=1), random_vector(seed=2)
    with pytest.raises(SteeringError, match="2 vectors need 2 norms"), steer(model, [a, b], 1.0):
        pass
    with pytest.raises(SteeringError, match="vector 2 has no direction for layers \\[2\\]"), \
            steer(model, [random_vector(seed=1), random_vector(layers=(1,), seed=2)], [1.0, 1.0]):
        pass


def test_orthogonalize_keeps_lengths_and_removes_the_overlap():
    a, b = random_vector(seed=1), random_vector(seed=2)
    mixed = SteeringVector({layer: 0.6 * a[layer] + 0.8 * b[layer] for layer in a.layers})
    before = layer_cosines(a, mixed)
    assert all(abs(c - float((0.6 + 0.8 * (a[k] @ b[k])) / mixed[k].norm())) < 1e-5 for k, c in before.items())
    ortho = orthogonalized(mixed, a)
    assert all(abs(c) < 1e-6 for c in layer_cosines(a, ortho).values())
    for layer in a.layers:
        assert float(ortho[layer].norm()) == pytest.approx(float(mixed[layer].norm()), rel=1e-6)


# --------------------------------------------------------------------------- the joint sweep
def _joint_run(tmp_path, name, grid_a, grid_b, **kw):
    model, a, b = tiny_model("llama"), random_vector(seed=1), random_vector(seed=2)
    from itertools import product

    plan = SweepPlan(norms=list(product(grid_a, grid_b)), tasks=sweep_tasks(), layers=[1, 2], chunk_size=3,
                     batch_size=kw.pop("batch_size", 40), vector_names=["A", "B"])
    config = run_config(plan, [a, b], model_name="tiny", model_revision=None, dtype="float32")
    return run_sweep(model, ByteTok(), [a, b], plan, tmp_path / name, config=config)


def _one_run(tmp_path, name, grid):
    model, a = tiny_model("llama"), random_vector(seed=1)
    plan = SweepPlan(norms=list(grid), tasks=sweep_tasks(), layers=[1, 2], chunk_size=3, batch_size=40)
    config = run_config(plan, a, model_name="tiny", model_revision=None, dtype="float32")
    return run_sweep(model, ByteTok(), a, plan, tmp_path / name, config=config)


def _items(run):
    return [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]


def test_axis_slice_of_a_joint_sweep_equals_the_one_vector_sweep(tmp_path):
    grid = [-2.0, -1.0, 0.0, 1.0, 2.0]
    joint = _items(_joint_run(tmp_path, "joint", grid, [-1.5, 0.0, 1.5]))
    single = _items(_one_run(tmp_path, "one", grid))
    assert all("norm" not in r and set(r["norms"]) == {"A", "B"} for r in joint)
    assert all("norms" not in r for r in single)
    axis = {(r["task"], r["norms"]["A"], r["item"]): r for r in joint if r["norms"]["B"] == 0.0}
    assert len(axis) == len(single)
    for rec in single:
        other = axis[(rec["task"], rec["norm"], rec["item"])]
        for key in ("alignment", "logit_gap", "helpfulness", "helpfulness_vocab", "logit_shift"):
            if key in rec:
                assert other[key] == pytest.approx(rec[key], rel=1e-5, abs=1e-6), key
        if "scores" in rec:
            np.testing.assert_allclose(other["scores"], rec["scores"], rtol=1e-5, atol=1e-5)


def test_joint_run_files_and_fits(tmp_path):
    grid = [-2.0, -1.0, 0.0, 1.0, 2.0]
    run = _joint_run(tmp_path, "joint", grid, grid)
    points = [json.loads(x) for x in (run / "points.jsonl").read_text().splitlines()]
    assert all("norm" not in p and set(p["norms"]) == {"A", "B"} for p in points)
    data = read_run(run)
    assert data.joint is not None and data.joint.names == ["A", "B"] and data.joint.grid.shape == (25, 2)
    assert data.tasks == {"harm": "alignment", "qa": "helpfulness"}
    fits = fit_run(run, n_boot=20)
    surface = fits["joint"]["surfaces"]["qa"]
    assert surface["n_points"] == 25 and set(surface["params"]) == {"h0", "b1", "b2", "c1", "c2", "c12"}
    # h0 is the unsteered helpfulness up to the fit's residual
    h0 = next(p["mean"] for p in points if p["task"] == "qa" and p["metric"] == "helpfulness"
              and p["norms"] == {"A": 0.0, "B": 0.0})
    assert surface["params"]["h0"] == pytest.approx(h0, abs=0.05)
    lo, hi = surface["ci"]["c12"]
    assert lo <= hi
    pred = fits["joint"]["predictions"]["qa"]
    assert pred["probe"] == [1.0, 1.0] and -1 <= pred["rho"] <= 1
    assert [row["vector"] for row in fits["off_target"]] == ["A", "B"]
    assert set(fits["off_target"][0]["slopes"]) == {"harm"}


# --------------------------------------------------------------------------- the theory, on synthetic data
def test_surface_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    axis = np.linspace(-2, 2, 9)
    grid = np.array([(x, y) for x in axis for y in axis])
    truth = {"h0": 0.7, "b1": 0.02, "b2": -0.01, "c1": -0.05, "c2": -0.03, "c12": 0.04}
    per_item = rng.normal(0, 0.02, size=(200, 1)) + rng.normal(0, 0.01, size=(200, grid.shape[0]))
    r1, r2 = grid[:, 0], grid[:, 1]
    surface = (truth["h0"] + truth["b1"] * r1 + truth["b2"] * r2 + truth["c1"] * r1**2 + truth["c2"] * r2**2
               + truth["c12"] * r1 * r2)
    fit = fit_surface(grid, surface + per_item, n_boot=100)
    for term, value in truth.items():
        assert fit["params"][term] == pytest.approx(value, abs=3e-3), term
        lo, hi = fit["ci"][term]
        assert lo - 1e-9 <= value <= hi + 1e-9 or abs(fit["params"][term] - value) < 1e-3, term
    zero = fit_surface(grid, truth["h0"] + truth["c1"] * r1**2 + truth["c2"] * r2**2 + per_item, n_boot=100)
    lo, hi = zero["ci"]["c12"]
    assert lo < 0 < hi  # no cross term: its interval holds 0
    assert fit_surface(grid[:4], surface[None, :4], n_boot=0)["params"] is None


def test_local_slope_against_numpy_polyfit():
    norms = np.array([-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0])
    values = np.tanh(0.3 * norms)[None, :] + np.random.default_rng(1).normal(0, 0.05, (30, norms.size))
    got = local_slope(norms, values, n_boot=50, seed=0, label="t")
    inside = np.abs(norms) <= 2.0  # the 5 norms nearest 0
    assert got["window"] == 2.0
    assert got["value"] == pytest.approx(np.polyfit(norms[inside], values[:, inside].mean(0), 1)[0])
    assert got["ci"][0] <= got["value"] <= got["ci"][1]


# --------------------------------------------------------------------------- config and command line
def test_run_config_combine_names_behaviors_of_the_config():
    from repe_tradeoff.workflows.settings import StudyConfig

    cfg = StudyConfig(behaviors=["harmfulness", "fairness"], combine=["harmfulness", "fairness"])
    assert cfg.combine == ["harmfulness", "fairness"]
    with pytest.raises(ValueError, match="combine: give two or more different behaviors"):
        StudyConfig(behaviors=["harmfulness"], combine=["harmfulness", "sentiment"])


def _cli(*args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "repe_tradeoff", *map(str, args)], check=False, capture_output=True,
                          text=True, env=env)


def test_cli_norms_per_vector_and_off_target_matrix(tmp_path):
    a = tmp_path / "a.safetensors"
    random_vector(seed=1).save(a)
    bad = _cli("sweep", "--vector", a, "--norms", "-1:1:1", "--norms", "0,1", "--alignment", "harmfulness",
               "--out", tmp_path / "x")
    assert bad.returncode != 0 and "2 --norms for 1 --vector" in bad.stderr and "Traceback" not in bad.stderr
    run = _joint_run(tmp_path, "joint", [-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0])
    out = _cli("off-target", run)
    assert out.returncode == 0, out.stderr
    assert "A" in out.stdout and "B" in out.stdout and "harm" in out.stdout


def test_cli_fit_on_a_joint_run_prints_the_cross_term(tmp_path):
    grid = [-2.0, -1.0, 0.0, 1.0, 2.0]
    run = _joint_run(tmp_path, "joint", grid, grid)
    out = _cli("fit", run, "--n-boot", "20")
    assert out.returncode == 0, out.stderr
    surface = json.loads((run / "fits.json").read_text())["joint"]["surfaces"]["qa"]
    line = next(x for x in out.stdout.splitlines() if x.startswith("qa: c12 = "))
    assert float(line.split()[3]) == pytest.approx(surface["params"]["c12"], rel=1e-3)
    lo, hi = surface["ci"]["c12"]
    assert ("0 is inside the CI" in line) == (lo <= 0 <= hi)
    assert "slopes at r = 0 along A: harm" in out.stdout and "wrote" in out.stdout
