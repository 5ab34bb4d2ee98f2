"""Tests of ``repe_tradeoff.theory`` on synthetic run folders with known parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, special

from repe_tradeoff.runs import Curve, read_run
from repe_tradeoff.theory import TheoryError, evaluate, fit_run, import_paper_curves
from repe_tradeoff.theory.checks.assumptions import check_a1
from repe_tradeoff.theory.decisions.regime import pareto, regime_end
from repe_tradeoff.theory.laws.curves import monotone_range
from repe_tradeoff.theory.laws.fitting import fit_law
from repe_tradeoff.theory.laws.forms import (
    corollary_law,
    corollary_paper_law,
    get_law,
    helpfulness_laws,
    quadratic_law,
)

PAPER = Path(__file__).resolve().parent / "fixtures" / "paper-curves"  # two of the authors' measured curves
GRID = np.round(np.linspace(-4, 4, 17), 6)


# --------------------------------------------------------------------------- helpers
def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def point(task, kind, metric, r, values):
    v = np.asarray(values, dtype=float)
    return {
        "task": task, "kind": kind, "metric": metric, "norm": float(r), "mean": float(v.mean()),
        "stderr": float(v.std(ddof=1) / np.sqrt(v.size)), "n": int(v.size),
    }


def write_config(d: Path, k: int = 4, n_items: int = 100) -> None:
    (d / "config.json").write_text(json.dumps({
        "format_version": 1,
        "tasks": [
            {"name": "harm", "kind": "alignment", "n_items": n_items},
            {"name": "qa", "kind": "helpfulness", "n_choices": k, "n_items": n_items},
        ],
    }))


def curve_run(d: Path, *, align, helpful, norms=GRID, n_items=150, noise=(0.2, 0.1), seed=0,
              k=4, items=True, config=True) -> Path:
    """A run whose per-item values are ``curve(r) + noise``: the means follow the curves."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    pts, its = [], []
    for task, kind, metric, f, sd in (
        ("harm", "alignment", "alignment", align, noise[0]),
        ("qa", "helpfulness", "helpfulness", helpful, noise[1]),
    ):
        vals = f(norms)[None, :] + rng.normal(0, sd, (n_items, norms.size))
        for j, r in enumerate(norms):
            pts.append(point(task, kind, metric, r, vals[:, j]))
            for q in range(n_items):
                its.append({"task": task, "kind": kind, "norm": float(r), "item": q,
                            metric: float(vals[q, j])})
    write_jsonl(d / "points.jsonl", pts)
    if items:
        write_jsonl(d / "items.jsonl", its)
    if config:
        write_config(d, k, n_items)
    return d


def model_run(d: Path, *, sigma=0.8, n_items=300, k=4, norms=GRID, seed=1, gain=3.0,
              a=0.6, b=0.2, with_zero=True, with_scores=True) -> Path:
    """Items from the paper's model: the options' scores move by ``r·u_q``, ``u ~ N(0, σ²/2)``.

    So ``X_i(r) = r·(u_i − u_c)`` is Gaussian with standard deviation ``σ·|r|`` (A3), the
    logit shift is ``gain·|r|`` (A1), and alignment is ``tanh(a·r + b)`` plus item noise.
    """
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    norms = norms if with_zero else norms[np.abs(norms) > 0]
    base = rng.normal(0, 1.5, (n_items, k))
    ans = rng.integers(0, k, n_items)
    base[np.arange(n_items), ans] += 1.5
    u = rng.normal(0, sigma / np.sqrt(2), (n_items, k))
    pts, its = [], []
    for r in norms:
        z = base + r * u
        lse = special.logsumexp(z, axis=1)
        scores = z - np.logaddexp(lse, 1.0)[:, None]
        h = np.exp(z[np.arange(n_items), ans] - lse)
        hv = np.exp(scores[np.arange(n_items), ans])
        shift = np.full(n_items, gain * abs(r))
        for q in range(n_items):
            row = {"task": "qa", "kind": "helpfulness", "norm": float(r), "item": q,
                   "answer": int(ans[q]), "helpfulness": float(h[q]),
                   "helpfulness_vocab": float(hv[q]), "logit_shift": float(shift[q])}
            if with_scores:
                row["scores"] = scores[q].tolist()
            its.append(row)
        for m, v in (("helpfulness", h), ("helpfulness_vocab", hv), ("logit_shift", shift)):
            pts.append(point("qa", "helpfulness", m, r, v))
    al = np.tanh(a * norms + b)[None, :] + rng.normal(0, 0.3, (n_items, norms.size))
    for j, r in enumerate(norms):
        pts.append(point("harm", "alignment", "alignment", r, al[:, j]))
        its += [{"task": "harm", "kind": "alignment", "norm": float(r), "item": q,
                 "alignment": float(al[q, j])} for q in range(n_items)]
    write_jsonl(d / "points.jsonl", pts)
    write_jsonl(d / "items.jsonl", its)
    write_config(d, k, n_items)
    return d


def inside(ci, value):
    return ci is not None and ci[0] <= value <= ci[1]


def alignment_of(fits, task="harm"):
    """The fits.json block of an alignment task."""
    return fits["tasks"][task]


def helpfulness_of(fits, task="qa", metric="helpfulness"):
    """The fitted ``metric`` curve of a helpfulness task."""
    return fits["tasks"][task][metric]


# ------------------------------------------------------------------------------ laws
def test_k_option_corollary_limits():
    for k in (2, 4, 10):
        law = corollary_law(1.0 / k)
        for p0 in (0.3 if k > 3 else 0.6, 0.9):
            a = (1 - p0) / (p0 - 1 / k)
            assert law(0.0, a, 0.7) == pytest.approx(p0)
            assert law(1e6, a, 0.7) == pytest.approx(1 / k, abs=1e-9)
    # chance 0 is the paper's full-vocabulary corollary exactly
    r = np.linspace(-3, 3, 7)
    assert np.allclose(corollary_law(0.0)(r, 0.4, 1.3), 1 / (1 + 0.4 + 0.4 * 1.3**2 / 2 * r**2))
    # the authors' 4-option form is a different (empirical) amplitude, capped at 0.75
    assert corollary_paper_law()(0.0, 1e-9, 1.0) == pytest.approx(0.75)
    assert corollary_law(0.25)(0.0, 1e-9, 1.0) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(2, 12),
    a=st.floats(1e-6, 1e3),
    b=st.floats(0, 50),
    r=st.floats(-100, 100),
)
def test_k_option_corollary_is_a_probability_above_chance(k, a, b, r):
    for name in ("corollary", "corollary_exact"):
        v = float(get_law(name, chance=1.0 / k)(r, a, b))
        assert 1.0 / k - 1e-12 <= v <= 1.0 + 1e-12


def test_quadratic_on_parabola_is_exact():
    r = np.linspace(-2, 2, 9)
    y = 0.7 - 0.03 * r - 0.05 * r**2
    res = fit_law(quadratic_law(), r, y)
    assert res.ok
    assert np.allclose(res.params, [0.7, -0.03, -0.05], atol=1e-12)
    assert res.r2 == pytest.approx(1.0)


def test_two_points_report_an_error(tmp_path):
    res = fit_law(corollary_law(0.25), [0.0, 1.0], [0.6, 0.5])
    assert not res.ok and "too few points" in res.error
    write_jsonl(tmp_path / "points.jsonl", [
        {"metric": "helpfulness", "norm": 0.0, "mean": 0.6},
        {"metric": "helpfulness", "norm": 1.0, "mean": 0.5},
        {"metric": "alignment", "norm": 0.0, "mean": 0.1},
        {"metric": "alignment", "norm": 1.0, "mean": 0.4},
    ])
    fits = fit_run(tmp_path, choices=4, n_boot=5)
    h = helpfulness_of(fits, "helpfulness")
    assert "too few points" in h["fits"]["corollary"]["error"]
    assert h["fits"]["corollary"]["params"] is None
    assert "too few points" in alignment_of(fits, "alignment")["fits"]["tanh"]["error"]
    assert fits["efficient_regime"] is None
    assert h["best"] is None


def test_flat_curve_is_degenerate():
    res = fit_law(corollary_law(0.25), GRID, np.full(GRID.size, 0.5))
    assert not res.ok and "degenerate" in res.error


# ---------------------------------------------------------------------------- fitting
def test_fits_recover_parameters_within_bootstrap_ci(tmp_path):
    a_t, b_t, a_h, b_h = 0.7, 0.3, 0.5, 0.9
    align = lambda r: np.tanh(a_t * r + b_t)
    helpful = lambda r: corollary_law(0.25)(r, a_h, b_h)
    # (seeded: 95% intervals miss the truth one time in twenty)
    run = curve_run(tmp_path, align=align, helpful=helpful, n_items=200, seed=2)
    fits = fit_run(run, n_boot=60, seed=3)
    tanh = alignment_of(fits)["fits"]["tanh"]
    assert tanh["ci_method"] == "bootstrap-items"
    assert inside(tanh["ci"]["a"], a_t) and inside(tanh["ci"]["b"], b_t)
    assert tanh["r2"] > 0.99
    slope = alignment_of(fits)["slope_at_zero"]
    assert inside(slope["ci"], a_t * (1 - np.tanh(b_t) ** 2))
    h = helpfulness_of(fits)
    cor = h["fits"]["corollary"]
    assert cor["ci_method"] == "bootstrap-items"
    assert inside(cor["ci"]["a"], a_h) and inside(cor["ci"]["b"], b_h)
    assert fits["tasks"]["qa"]["k"] == 4 and h["chance"] == 0.25
    for blk in ("corollary", "quadratic", "gaussian", "logistic", "linear"):
        assert None not in [h["fits"][blk][key] for key in ("r2", "aic", "bic", "params", "ci")]
    # the file on disk is what was returned, and no temporary file is left behind
    assert json.loads((run / "fits.json").read_text()) == fits
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


def test_covariance_intervals_without_items(tmp_path):
    run = curve_run(
        tmp_path, align=lambda r: np.tanh(0.5 * r - 0.2),
        helpful=lambda r: get_law("gaussian", chance=0.25)(r, 0.4, 1.5),
        n_items=200, items=False,
    )
    fits = fit_run(run, n_boot=20)
    tanh = alignment_of(fits)["fits"]["tanh"]
    assert tanh["ci_method"] == "covariance"
    assert inside(tanh["ci"]["a"], 0.5) and inside(tanh["ci"]["b"], -0.2)
    g = helpfulness_of(fits)["fits"]["gaussian"]
    assert inside(g["ci"]["A"], 0.4) and inside(g["ci"]["s"], 1.5)
    assert fits["efficient_regime"]["ci_method"] == "bootstrap-parametric"
    assert fits["tasks"]["qa"]["checks"]["a3"] is None
    assert any("no items" in w for w in fits["warnings"])


@pytest.mark.parametrize(
    ("true", "params"),
    [
        ("gaussian", (0.45, 1.2)),
        ("corollary", (0.3, 1.5)),
        ("logistic", (0.5, 2.0, 0.3)),
        ("corollary_exact", (0.4, 0.9)),
    ],
)
def test_aic_picks_the_generating_form(tmp_path, true, params):
    norms = np.round(np.linspace(-6, 6, 25), 6)
    f = lambda r: get_law(true, chance=0.25)(r, *params)
    run = curve_run(tmp_path, align=lambda r: np.tanh(0.5 * r), helpful=f, norms=norms,
                    n_items=400, noise=(0.2, 0.05), items=False)
    h = helpfulness_of(fit_run(run, n_boot=0))
    best = h["best"]
    # a model with one more parameter that contains the true one may tie; AIC must not
    # prefer it by more than its penalty
    assert best == true or (
        best.startswith(true) and h["comparison"][true]["delta_aic"] <= 2.0
    ), (best, h["comparison"])


def test_quadratic_window_falls_back_to_central_third(tmp_path):
    norms = np.round(np.linspace(-40, 40, 17), 6)
    run = curve_run(tmp_path, align=lambda r: np.tanh(0.05 * r),
                    helpful=lambda r: 0.25 + 0.5 * np.exp(-(r**2) / 800), norms=norms,
                    items=False)
    fits = fit_run(run, window=2.0, n_boot=0)
    quad = helpfulness_of(fits)["fits"]["quadratic"]
    # the 6 norms nearest 0 (a third of 17) reach |r| = 15, which holds 7 norms
    assert quad["window"] == pytest.approx(15.0) and quad["n_points"] == 7
    assert any("central third" in w for w in fits["warnings"])


def test_k_resolution(tmp_path):
    run = curve_run(tmp_path, align=lambda r: np.tanh(r), helpful=lambda r: 0.2 + 0.5 * np.exp(-r * r),
                    items=False, config=False)
    fits = fit_run(run, n_boot=0)
    assert fits["tasks"]["qa"]["k"] == 4
    assert any("assumed k = 4" in w for w in fits["warnings"])
    fits = fit_run(run, choices=5, n_boot=0)
    assert fits["tasks"]["qa"]["k"] == 5 and helpfulness_of(fits)["chance"] == 0.2
    assert not any("assumed k" in w for w in fits["warnings"])


# ------------------------------------------------------------------------ diagnostics
def test_diagnostics_recover_sigma_and_predict_the_curve(tmp_path):
    sigma = 0.8
    run = model_run(tmp_path, sigma=sigma)
    fits = fit_run(run, n_boot=40, n_draws=1500)
    d = fits["tasks"]["qa"]["checks"]
    assert d["a1"]["status"] == "pass" and d["a1"]["slope"] == pytest.approx(3.0)
    assert d["a1"]["saturates_at"] is None
    a3 = d["a3"]
    assert inside(a3["sigma_ci"], sigma) and a3["sigma"] == pytest.approx(sigma, rel=0.08)
    assert a3["status"] == "pass"
    row = a3["by_norm"][0]
    assert None not in [row[k] for k in ("mean", "std", "skew", "excess_kurtosis", "normality_p",
                                         "qq_corr")]
    pred = d["prediction"]
    assert pred["norms"] == GRID.tolist() and len(pred["predicted"]) == GRID.size
    assert pred["rmse"] < 0.03 and pred["max_abs_error"] < 0.06
    # at r = 0 the prediction is the measured mean exactly
    z = GRID.tolist().index(0.0)
    assert pred["predicted"][z] == pytest.approx(pred["measured"][z], abs=1e-9)
    # the shared-X closed form decays to 0 instead of 1/k: worse far from 0
    assert pred["rmse_closed_form"] > pred["rmse"]
    vocab = helpfulness_of(fits, metric="helpfulness_vocab")
    assert vocab["chance"] == 0.0
    assert vocab["fits"]["corollary"]["formula"].startswith("1/(1 + a")
    assert pred["status"] == "pass"


def test_diagnostics_without_zero_or_scores_warn(tmp_path):
    fits = fit_run(model_run(tmp_path / "a", with_zero=False, n_items=40), n_boot=5)
    checks = fits["tasks"]["qa"]["checks"]
    assert checks["a3"] is None and checks["prediction"] is None
    assert any("no r = 0" in w for w in fits["warnings"])
    assert fits["recommendation"]["norm"] is None
    fits = fit_run(model_run(tmp_path / "b", with_scores=False, n_items=40), n_boot=5)
    assert fits["tasks"]["qa"]["checks"]["a3"] is None
    assert any("no `scores`" in w for w in fits["warnings"])


def test_a1_detects_saturation():
    r = np.round(np.linspace(-6, 6, 25), 6)
    shift = 3 * np.minimum(np.abs(r), 3.0)
    none = np.full(r.size, np.nan)
    res = check_a1(Curve("qa", "helpfulness", "logit_shift", r, shift, none, none))
    assert res["saturates_at"] == pytest.approx(3.0)
    assert res["status"] == "warn"
    flat = check_a1(Curve("qa", "helpfulness", "logit_shift", r, np.zeros_like(r), none, none))
    assert flat["status"] == "fail"


# --------------------------------------------------------------------- efficient regime
def test_efficient_regime_matches_the_analytic_root(tmp_path):
    a, a0, b, lam = 0.8, 0.4, 1.1, 1.0
    A = lambda r: np.tanh(a * r)
    H = lambda r: 1 / (1 + a0 + a0 * b * b * r * r / 2)

    def marginal(r):  # d/dr [A + lam H]
        return a / np.cosh(a * r) ** 2 - lam * a0 * b * b * r / (1 + a0 + a0 * b * b * r * r / 2) ** 2

    root = optimize.brentq(marginal, 1e-6, 4.0)
    end = regime_end(A, H, lam=lam, direction=1, t_max=4.0)
    assert end == pytest.approx(root, abs=1e-6)
    assert regime_end(lambda r: np.tanh(-a * r), H, lam=lam, direction=-1, t_max=4.0) == (
        pytest.approx(root, abs=1e-6)
    )
    # the same through fit_run on exact curves (4 options: chance 1/4)
    k = 4
    Hk = lambda r: 1 / k + (1 - 1 / k) * H(r)
    root_k = optimize.brentq(
        lambda r: a / np.cosh(a * r) ** 2
        - lam * (1 - 1 / k) * a0 * b * b * r / (1 + a0 + a0 * b * b * r * r / 2) ** 2,
        1e-6, 4.0,
    )
    norms = np.round(np.linspace(-4, 4, 33), 6)
    write_jsonl(tmp_path / "points.jsonl",
                [{"metric": "alignment", "norm": float(r), "mean": float(A(r))} for r in norms]
                + [{"metric": "helpfulness", "norm": float(r), "mean": float(Hk(r))} for r in norms])
    fits = fit_run(tmp_path, choices=k, n_boot=0, lam=lam)
    reg = fits["efficient_regime"]
    assert reg["direction"] == 1 and reg["lambda"] == lam
    assert reg["helpfulness_model"].startswith("corollary")
    assert reg["max_norm"] == pytest.approx(root_k, abs=1e-3)
    rec = fits["lambda_recommendation"]
    assert 0 < rec["norm"] <= reg["max_norm"]
    assert rec["text"].startswith(f"r = {rec['norm']:.3g}: alignment +")


def test_recommendation_and_pareto_with_intervals(tmp_path):
    run = model_run(tmp_path, n_items=80)
    fits = fit_run(run, n_boot=20, n_draws=300)
    reg, rec = fits["efficient_regime"], fits["lambda_recommendation"]
    assert reg["ci"] is not None and reg["ci_method"] == "bootstrap-items"
    assert rec["norm"] > 0 and rec["norm"] <= reg["max_norm"] + 1e-9
    assert inside(rec["alignment_gain_ci"], rec["alignment_gain"])
    assert inside(rec["helpfulness_change_ci"], rec["helpfulness_change"])
    assert "[" in rec["text"]
    front = fits["pareto"]
    assert front and all({"norm", "alignment", "helpfulness"} <= set(p) for p in front)


def test_pareto_keeps_only_undominated_points():
    norms = np.array([0.0, 1.0, 2.0, 3.0])
    front = pareto(norms, np.array([0.0, 0.5, 0.4, 0.9]), np.array([0.8, 0.7, 0.6, 0.3]))
    assert [p["norm"] for p in front] == [0.0, 1.0, 3.0]


def test_monotone_range_trims_a_curve_that_turns_back():
    r = np.round(np.linspace(-5, 5, 21), 6)
    y = np.tanh(r)
    y[:3] = [0.8, 0.2, -0.6]  # breaks down at the far negative end
    lo, hi = monotone_range(r, y, 1)
    assert r[lo] == pytest.approx(-3.5) and hi == r.size - 1


# ------------------------------------------------------------------------ run files
def test_missing_points_is_a_clear_error(tmp_path):
    with pytest.raises(TheoryError, match="points.jsonl not found"):
        fit_run(tmp_path)
    with pytest.raises(TheoryError, match="not a folder"):
        fit_run(tmp_path / "nope")
    (tmp_path / "points.jsonl").write_text('{"metric": "helpfulness", "norm": 0}\n')
    with pytest.raises(TheoryError, match="missing `mean`"):
        fit_run(tmp_path)
    (tmp_path / "points.jsonl").write_text("{not json\n")
    with pytest.raises(TheoryError, match="not valid JSON"):
        fit_run(tmp_path)


def test_hand_written_points_without_task_or_kind(tmp_path):
    rows = [{"metric": m, "norm": float(r), "mean": v}
            for r in GRID for m, v in (("alignment", float(np.tanh(r))),
                                       ("helpfulness", float(0.25 + 0.5 * np.exp(-r * r / 4))))]
    write_jsonl(tmp_path / "points.jsonl", rows)
    run = read_run(tmp_path)
    assert run.tasks == {"alignment": "alignment", "helpfulness": "helpfulness"}
    fits = fit_run(tmp_path, choices=4, n_boot=0)
    assert {t: b["kind"] for t, b in fits["tasks"].items()} == {
        "alignment": "alignment", "helpfulness": "helpfulness"}


#: The laws written out by hand from their definitions (docs and the paper), not taken
#: from the code under test; ``c`` is the chance level.
HAND_LAWS = {
    "tanh": lambda r, c, a, b: np.tanh(a * r + b),
    "tanh_scaled": lambda r, c, A, a, b: A * np.tanh(a * r + b),
    "linear_full": lambda r, c, slope, intercept: slope * r + intercept,
    "corollary": lambda r, c, a, b: c + (1 - c) / (1 + a + a * b**2 / 2 * r**2),
    "corollary_exact": lambda r, c, a, b: c + (1 - c) / (1 + a * np.exp(b**2 * r**2 / 2)),
    "gaussian": lambda r, c, A, s: c + A * np.exp(-(r**2) / (2 * s**2)),
    "logistic": lambda r, c, A, m, s: c + A / (1 + np.exp((np.abs(r) - m) / s)),
    "quadratic": lambda r, c, c0, c1, c2: c0 + c1 * r + c2 * r**2,
    "linear": lambda r, c, slope, intercept: slope * r + intercept,
}


def test_evaluate_reproduces_a_fit_block(tmp_path):
    run = curve_run(tmp_path, align=lambda r: np.tanh(0.6 * r),
                    helpful=lambda r: corollary_law(0.25)(r, 0.5, 0.9), items=False)
    fits = fit_run(run, n_boot=0)
    points = [json.loads(x) for x in (run / "points.jsonl").read_text().splitlines()]
    for task, metric, curve in (("harm", "alignment", alignment_of(fits)),
                                ("qa", "helpfulness", helpfulness_of(fits))):
        chance = curve.get("chance", 0.0)
        pts = sorted((p["norm"], p["mean"]) for p in points
                     if p["task"] == task and p["metric"] == metric)
        r, y = np.array(pts).T
        checked = 0
        for name, blk in curve["fits"].items():
            hand = HAND_LAWS.get(blk["model"])
            if hand is None or blk["params"] is None:
                continue
            inside_fit = np.ones(r.size, bool)
            if blk["window"] is not None:
                inside_fit = np.abs(r) <= blk["window"] + 1e-9
            if blk["range"] is not None:
                inside_fit = (r >= blk["range"][0] - 1e-9) & (r <= blk["range"][1] + 1e-9)
            expected = hand(r, chance, *blk["params"].values())
            got = evaluate(blk["model"], blk["params"], r, chance=chance)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
            # the block's R² is the curve's, recomputed on the points it was fitted to
            yy, ff = y[inside_fit], expected[inside_fit]
            r2 = 1 - np.sum((yy - ff) ** 2) / np.sum((yy - yy.mean()) ** 2)
            assert blk["r2"] == pytest.approx(r2, abs=1e-9), (task, name)
            assert blk["n_points"] == int(inside_fit.sum())
            checked += 1
        assert checked >= 4
    # every candidate law is fitted, and the generating one fits closely
    assert set(helpfulness_laws(0.25, 4)) <= set(helpfulness_of(fits)["fits"])
    assert helpfulness_of(fits)["fits"]["corollary"]["r2"] > 0.95


def test_laws_refuse_unknown_names_and_parameters():
    with pytest.raises(TheoryError, match="unknown law 'tanhh'.*corollary.*tanh"):
        evaluate("tanhh", {"a": 1.0, "b": 0.0}, [0.0])
    with pytest.raises(TheoryError, match="unknown law"):
        get_law("nope")
    with pytest.raises(TheoryError, match=r"takes parameters \(a, b\), got \(a, c\)"):
        evaluate("tanh", {"a": 1.0, "c": 0.0}, [0.0])
    with pytest.raises(TheoryError, match="takes 2 parameters"):
        evaluate("tanh", [1.0], [0.0])
    with pytest.raises(TheoryError, match="must be numbers"):
        evaluate("tanh", {"a": "x", "b": 0.0}, [0.0])


def test_theory_imports_without_torch():
    code = "import sys, repe_tradeoff.theory; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ paper import
def test_paper_import_round_trip(tmp_path):
    help_file = PAPER / "international_law_Llama-2-13b-chat_harmfulness.json"
    beh_file = PAPER / "behavior_harmful_Llama-2-13b-chat_harmfulness.json"
    out = import_paper_curves(help_file, beh_file, tmp_path / "run")
    raw = json.loads(help_file.read_text())
    rows = [json.loads(x) for x in (out / "points.jsonl").read_text().splitlines()]
    rel = {r["norm"]: r for r in rows if r["metric"] == "helpfulness"}
    assert len(rel) == len(raw["p_mean_relative"])
    for key, v in raw["p_mean_relative"].items():
        assert rel[float(key)]["mean"] == v
        assert rel[float(key)]["stderr"] == pytest.approx(raw["p_std_relative"][key] / 10)
        assert rel[float(key)]["task"] == "international_law"
    assert {r["task"] for r in rows if r["metric"] == "alignment"} == {"harmful"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tasks"][1]["n_choices"] == 4 and cfg["model"] == "Llama-2-13b-chat"
    with pytest.raises(TheoryError, match="already exists"):
        import_paper_curves(help_file, beh_file, out)
    fits = fit_run(out, n_boot=10)
    task = fits["tasks"]["international_law"]
    assert task["helpfulness"]["fits"]["quadratic"]["r2"] > 0.94
    assert alignment_of(fits, "harmful")["fits"]["tanh_monotone"]["r2"] > 0.97
    assert task["helpfulness_vocab"]["metric"] == "helpfulness_vocab"


def test_paper_import_fit_and_report_from_the_command_line(tmp_path):
    """`import-paper`, `fit` and `report` through the CLI record the commands they ran."""
    help_file = PAPER / "international_law_Llama-2-13b-chat_harmfulness.json"
    beh_file = PAPER / "behavior_harmful_Llama-2-13b-chat_harmfulness.json"
    out = tmp_path / "run"

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "repe_tradeoff", *map(str, args)],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-2000:]

    cli("import-paper", help_file, beh_file, "--out", out)
    cli("fit", out, "--n-boot", 5, "--lambda", 0.5)
    cli("report", out)
    config = json.loads((out / "config.json").read_text())
    fits = json.loads((out / "fits.json").read_text())
    assert config["command"] == f"repe-tradeoff import-paper {help_file} {beh_file} --out {out}"
    assert fits["command"] == f"repe-tradeoff fit {out} --n-boot 5 --lambda 0.5"
    assert fits["settings"]["lambda"] == 0.5
    page = (out / "report.html").read_text()
    assert fits["command"] in page and "import-paper" in page
