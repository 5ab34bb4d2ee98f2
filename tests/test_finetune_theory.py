"""The laws against the shift and the comparison at equal alignment gain, on hand-made run files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repe_tradeoff.runs import write_points
from repe_tradeoff.theory.decisions.finetune import compare_steering, loss_at_gain
from repe_tradeoff.theory.laws.finetune import fit_finetune

STEPS = [0, 1, 2, 4]
SHIFT = [0.0, 0.5, 1.0, 2.0]


def _write(folder, rows, config=None, shifts=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_points(folder)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if shifts is not None:
        (folder / "shift.jsonl").write_text("".join(json.dumps(s) + "\n" for s in shifts))
    return folder


def _finetune_run(folder, align, helpful):
    """``align[i][k]``, ``helpful[i][k]``: item i at checkpoint k."""
    rows = []
    for k, (step, s) in enumerate(zip(STEPS, SHIFT)):
        rows += [{"task": "harm", "kind": "alignment", "norm": s, "step": step, "item": i, "alignment": a[k]}
                 for i, a in enumerate(align)]
        rows += [{"task": "qa", "kind": "helpfulness", "norm": s, "step": step, "item": i, "answer": 0,
                  "helpfulness": h[k]} for i, h in enumerate(helpful)]
    shifts = [{"step": step, "shift_norm": s, "shift_along": 0.25 * s, "logit_shift": 3.0 * s}
              for step, s in zip(STEPS, SHIFT)]
    return _write(folder, rows, {"kind": "finetune", "checkpoint_steps": STEPS, "behavior": "harm"}, shifts)


def test_laws_recover_known_coefficients(tmp_path):
    slopes, curv = [0.2, 0.3, 0.4, 0.5], [0.01, 0.02, 0.03, 0.04]
    align = [[-0.5 + b * s for s in SHIFT] for b in slopes]
    helpful = [[0.7 - c * s * s for s in SHIFT] for c in curv]
    fits = fit_finetune(_finetune_run(tmp_path / "ft", align, helpful), n_boot=100)
    a, h = fits["alignment"], fits["helpfulness"]
    assert a["slope"] == pytest.approx(np.mean(slopes)) and a["intercept"] == pytest.approx(-0.5)
    assert a["r2"] == pytest.approx(1.0)
    assert a["slope_ci"][0] <= np.mean(slopes) <= a["slope_ci"][1] and a["slope_ci"][0] >= 0.2 - 1e-12
    assert h["quadratic_coefficient"] == pytest.approx(np.mean(curv)) and h["p0"] == pytest.approx(0.7)
    assert fits["a1"]["status"] == "pass" and fits["a1"]["slope"] == pytest.approx(3.0)
    assert fits["along_fraction"]["median"] == pytest.approx(0.25)
    assert (tmp_path / "ft" / "finetune_fits.json").is_file()
    early = fit_finetune(tmp_path / "ft", n_boot=10, window=1.0)  # the checkpoints at s = 0, 0.5, 1
    assert early["alignment"]["n_checkpoints"] == 3 and early["alignment"]["slope"] == pytest.approx(np.mean(slopes))
    with pytest.raises(ValueError, match="wider window"):
        fit_finetune(tmp_path / "ft", window=0.6)


def test_loss_at_gain_interpolates_the_first_crossing():
    gain, loss = np.array([0.0, 0.2, 0.4, 0.6, 0.3]), np.array([0.0, 0.01, 0.02, 0.05, 0.2])
    assert loss_at_gain(gain, loss, 0.5) == pytest.approx(0.035)  # halfway from (0.4, 0.02) to (0.6, 0.05)
    assert loss_at_gain(gain, loss, 0.2) == pytest.approx(0.01)
    assert np.isnan(loss_at_gain(gain, loss, 0.7))


def test_comparison_at_the_largest_common_gain(tmp_path):
    ft_gain, ft_loss = [0.0, 0.2, 0.4, 0.6], [0.0, 0.01, 0.02, 0.05]
    st_gain, st_loss = [0.0, 0.1, 0.3, 0.5], [0.0, 0.02, 0.06, 0.1]
    n = 6  # identical items: the interval collapses onto the point
    ft = _finetune_run(tmp_path / "ft", [[-0.4 + g for g in ft_gain]] * n, [[0.7 - x for x in ft_loss]] * n)
    rows = []
    for r, g, lo in zip([-1.0, 0.0, 1.0, 2.0, 3.0], [-0.1, *st_gain], [0.01, *st_loss]):
        rows += [{"task": "harm", "kind": "alignment", "norm": r, "item": i, "alignment": -0.4 + g} for i in range(n)]
        rows += [{"task": "qa", "kind": "helpfulness", "norm": r, "item": i, "answer": 0, "helpfulness": 0.7 - lo}
                 for i in range(n)]
    steer = _write(tmp_path / "steer", rows)
    out = compare_steering(ft, steer, n_boot=50)
    assert out["gain"] == pytest.approx(0.5)
    assert out["finetune"]["loss"] == pytest.approx(0.035) and out["steering"]["loss"] == pytest.approx(0.1)
    assert out["difference"] == pytest.approx(-0.065)
    assert out["difference_ci"] == pytest.approx([-0.065, -0.065])
    assert out["cheaper"] == "finetune"
    assert [p["norm"] for p in out["steering"]["curve"]] == [0.0, 1.0, 2.0, 3.0]  # r >= 0 only


def test_comparison_stops_where_the_model_stops_answering(tmp_path):
    n = 3
    ft = _finetune_run(tmp_path / "ft", [[-0.4 + g for g in (0.0, 0.2, 0.4, 0.6)]] * n,
                       [[0.7 - x for x in (0.0, 0.01, 0.02, 0.05)]] * n)
    rows = []
    # at r = 3 the likelier response has lost 3 nats per token (> ln 10): the model no longer answers
    for r, g, lo, lp in zip([0.0, 1.0, 2.0, 3.0], [0.0, 0.1, 0.3, 0.5], [0.0, 0.02, 0.06, 0.1], [-1, -1.5, -2, -4]):
        rows += [{"task": "harm", "kind": "alignment", "norm": r, "item": i, "alignment": -0.4 + g,
                  "response_logprob": lp} for i in range(n)]
        rows += [{"task": "qa", "kind": "helpfulness", "norm": r, "item": i, "answer": 0, "helpfulness": 0.7 - lo}
                 for i in range(n)]
    steer = _write(tmp_path / "steer", rows)
    out = compare_steering(ft, steer, n_boot=20)
    assert out["points_used"] == {"finetune": 4, "steering": 3}
    assert out["gain"] == pytest.approx(0.3) and out["steering"]["loss"] == pytest.approx(0.06)
    assert out["finetune"]["loss"] == pytest.approx(0.015)  # halfway from (0.2, 0.01) to (0.4, 0.02)
    assert compare_steering(ft, steer, n_boot=20, fluent_only=False)["gain"] == pytest.approx(0.5)


def test_comparison_needs_shared_items(tmp_path):
    ft = _finetune_run(tmp_path / "ft", [[0.0, 0.1, 0.2, 0.3]] * 3, [[0.7] * 4] * 3)
    rows = [{"task": "other", "kind": "alignment", "norm": r, "item": 0, "alignment": 0.0} for r in (0.0, 1.0)]
    with pytest.raises(ValueError, match="alignment task"):
        compare_steering(ft, _write(tmp_path / "steer", rows))
    with pytest.raises(ValueError, match="not a fine-tuning run"):
        fit_finetune(tmp_path / "steer")


def _cli(*args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "repe_tradeoff", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def test_cli_fits_and_reports_against_a_steering_run(tmp_path):
    ft_gain, ft_loss = [0.0, 0.2, 0.4, 0.6], [0.0, 0.01, 0.02, 0.05]
    ft = _finetune_run(tmp_path / "ft", [[-0.4 + g + 0.01 * i for g in ft_gain] for i in range(4)],
                       [[0.7 - x - 0.01 * i for x in ft_loss] for i in range(4)])
    rows = []
    for r, g, lo in zip([0.0, 1.0, 2.0], [0.0, 0.3, 0.5], [0.0, 0.06, 0.1]):
        rows += [{"task": "harm", "kind": "alignment", "norm": r, "item": i, "alignment": -0.4 + g + 0.01 * i}
                 for i in range(4)]
        rows += [{"task": "qa", "kind": "helpfulness", "norm": r, "item": i, "answer": 0,
                  "helpfulness": 0.7 - lo - 0.01 * i} for i in range(4)]
    steer = _write(tmp_path / "steer", rows)
    fitted = _cli("fit", ft)
    assert fitted.returncode == 0, fitted.stderr
    assert "A1 pass" in fitted.stdout and (ft / "finetune_fits.json").is_file()
    reported = _cli("report", ft, "--against", steer)
    assert reported.returncode == 0, reported.stderr
    assert "At the largest alignment gain both reach, 0.5" in reported.stdout
    assert (ft / "plots" / "finetune_tradeoff.png").is_file() and (ft / "finetune.html").is_file()
    refused = _cli("report", steer, "--against", ft)
    assert refused.returncode == 1 and "not a fine-tuning run" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_run_config_takes_a_finetune_key(tmp_path):
    from repe_tradeoff.workflows.settings import ConfigError, load_config

    good = tmp_path / "good.yaml"
    good.write_text("finetune: {steps: 8, checkpoints: 4, learning_rate: 0.002}\n")
    spec = load_config(good).finetune
    assert (spec.steps, spec.checkpoints, spec.learning_rate, spec.batch_pairs) == (8, 4, 0.002, 4)
    assert load_config(_yaml(tmp_path, "model: default\n")).finetune is None
    with pytest.raises(ConfigError, match="finetune.stepz"):
        load_config(_yaml(tmp_path, "finetune: {stepz: 8}\n"))


def _yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path
