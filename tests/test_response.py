"""The response: synthetic items with known polynomial or saturating scores, checked against
direct evaluation of the true scores, a by-hand fit of the saturating curve, and finite
differences of the predicted curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repe_tradeoff.theory import (
    Probe,
    TheoryError,
    alignment_response,
    decompose,
    find_probe,
    helpfulness_response,
    predict_alignment,
    predict_helpfulness,
    predicted_points,
    trust_radius,
    validate,
)
from tests.helpers import hand_saturating, hyperbola, response_items, true_gap, true_scores

GRID = [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]  # probe h = 0.25 with ±2h


def _records(items, grid=GRID, task="qa", atask="harm"):
    rows = []
    for r in grid:
        for q, it in enumerate(items):
            s = true_scores(it, r)
            rows.append({"task": task, "kind": "helpfulness", "norm": r, "item": q,
                         "answer": it["answer"], "scores": s.tolist(),
                         "helpfulness_vocab": float(math.exp(s[it["answer"]]))})
            rows.append({"task": atask, "kind": "alignment", "norm": r, "item": q,
                         "logit_gap": float(true_gap(it, r))})
    return rows


def _direct_helpfulness(items, r, vocab=False):
    """Mean P(correct) of the true scores, by a plain per-item loop."""
    vals = []
    for it in items:
        s = true_scores(it, r)
        if vocab:
            vals.append(min(1.0, math.exp(s[it["answer"]])))
        else:
            w = [math.exp(x) for x in s]
            vals.append(w[it["answer"]] / sum(w))
    return float(np.mean(vals))


def _direct_alignment(items, r):
    return float(np.mean([2.0 / (1.0 + math.exp(-true_gap(it, r))) - 1.0 for it in items]))


# --- the probe ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grid, h, has_2h",
    [
        ([-3, -1, 0, 1, 2, 3], 1.0, False),  # -2 missing
        ([-0.4, -0.2, 0, 0.2, 0.4, 0.6], 0.2, True),
        ([-0.5, -0.25, 0, 0.1, 0.25, 0.5], 0.25, True),  # 0.1 has no partner
        ([-2, 0, 2], 2.0, False),
    ],
)
def test_find_probe_on_odd_grids(grid, h, has_2h):
    probe = find_probe(grid)
    assert probe.h == pytest.approx(h) and probe.has_2h is has_2h


def test_find_probe_on_a_float_grid_in_residual_units():
    grid = np.linspace(-0.2, 0.2, 33) * 61.7  # 0.0125 steps, scaled
    probe = find_probe(grid)
    assert probe.h == pytest.approx(0.0125 * 61.7) and probe.has_2h


def test_find_probe_errors_say_which_norms_are_needed():
    with pytest.raises(TheoryError, match=r"no norm 0.*add 0"):
        find_probe([-1, -0.5, 0.5, 1])
    with pytest.raises(TheoryError, match=r"no symmetric pair ±h.*0, \+h and -h"):
        find_probe([0, 0.5, 1, -0.7])
    with pytest.raises(TheoryError, match="empty"):
        find_probe([])


def test_records_without_the_probe_norms_are_refused():
    rows = _records(response_items(5), grid=[0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="symmetric pair"):
        helpfulness_response(rows)


# --- exact recovery of quadratic scores --------------------------------------------------


@pytest.mark.parametrize("grid", [GRID, [-0.25, 0.0, 0.25, 0.5]])
def test_quadratic_scores_predicted_exactly_at_any_norm(grid):
    items = response_items(ragged=True)
    rows = _records(items, grid=grid)
    resp = helpfulness_response(rows)
    aresp = alignment_response(rows)
    norms = [-3.0, -1.3, 0.0, 0.37, 2.0, 5.5]
    pred = predict_helpfulness(resp, norms, n_boot=0)
    vocab = predict_helpfulness(resp, norms, vocab=True, n_boot=0)
    align = predict_alignment(aresp, norms, n_boot=0)
    for j, r in enumerate(norms):
        assert pred.mean[j] == pytest.approx(_direct_helpfulness(items, r), abs=1e-10)
        assert vocab.mean[j] == pytest.approx(_direct_helpfulness(items, r, vocab=True), abs=1e-10)
        assert align.mean[j] == pytest.approx(_direct_alignment(items, r), abs=1e-10)


def test_derivatives_match_the_true_coefficients():
    # cubic scores: the five-point odd part is exact, and so is the even part (a parabola)
    items = response_items(6, cubic=0.4)
    resp = helpfulness_response(_records(items))
    u, sa = resp.margins, resp.answer_score
    for q, it in enumerate(items):
        ans = it["answer"]
        np.testing.assert_allclose(u.slope[q], it["b"] - it["b"][ans], atol=1e-10)
        np.testing.assert_allclose(u.curvature[q], it["c"] - it["c"][ans], atol=1e-9)
        np.testing.assert_allclose(u.resolved_curvature[q], it["c"] - it["c"][ans], atol=1e-9)
        np.testing.assert_allclose(u.third[q], it["d"] - it["d"][ans], atol=1e-8)
        np.testing.assert_allclose(u.bend[q], 0.0, atol=1e-9)  # a parabola, to rounding of q = 4
        assert sa.slope[q] == pytest.approx(it["b"][ans], abs=1e-10)
        assert sa.third[q] == pytest.approx(it["d"][ans], abs=1e-8)
    assert resp.model == "saturating"
    assert helpfulness_response(_records(items, grid=[-0.25, 0.0, 0.25])).model == "quadratic"


# --- exact recovery of saturating scores ------------------------------------------------


def _saturating_items(n=24, k=4, seed=7):
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        items.append({
            "answer": int(rng.integers(0, k)),
            # (value, slope, curvature, ρ, third derivative) of the answer's own score, of each
            # option's margin against it, and of the logit gap
            "own": (rng.normal(-1.5, 0.5), rng.normal(0, 0.5), rng.normal(-1, 0.4),
                    rng.uniform(0.2, 1.5), rng.normal(0, 0.3)),
            "margins": [(rng.normal(-1.0, 1.0), rng.normal(0, 0.8), rng.normal(-2, 1.0),
                         rng.uniform(0.15, 2.0), rng.normal(0, 0.5)) for _ in range(k)],
            "gap": (rng.normal(0, 1.0), rng.normal(1, 0.5), rng.normal(0, 1.0),
                    rng.uniform(0.2, 1.5), rng.normal(0, 0.3)),
        })
    return items


def _saturating(params, r):
    value, slope, curv, rho, third = params
    return value + slope * r + third * r**3 / 6 + hyperbola(curv, rho, r)


def _saturating_scores(it, r):
    own = _saturating(it["own"], r)
    return [own if j == it["answer"] else own + _saturating(m, r)
            for j, m in enumerate(it["margins"])]


def _saturating_records(items, grid=GRID):
    rows = []
    for r in grid:
        for q, it in enumerate(items):
            s = _saturating_scores(it, r)
            rows.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": q,
                         "answer": it["answer"], "scores": s,
                         "helpfulness_vocab": min(1.0, math.exp(s[it["answer"]]))})
            rows.append({"task": "harm", "kind": "alignment", "norm": r, "item": q,
                         "logit_gap": _saturating(it["gap"], r)})
    return rows


def test_saturating_scores_predicted_exactly_far_outside_the_probe():
    items = _saturating_items()
    rows = _saturating_records(items)
    resp, aresp = helpfulness_response(rows), alignment_response(rows)
    norms = [-6.0, -2.2, 0.0, 0.4, 3.0, 9.0]  # the probe reaches ±0.5
    pred = predict_helpfulness(resp, norms, n_boot=0).mean
    vocab = predict_helpfulness(resp, norms, vocab=True, n_boot=0).mean
    align = predict_alignment(aresp, norms, n_boot=0).mean
    for j, r in enumerate(norms):
        probs, fulls, aligns = [], [], []
        for it in items:
            w = [math.exp(x) for x in _saturating_scores(it, r)]
            probs.append(w[it["answer"]] / sum(w))
            fulls.append(min(1.0, w[it["answer"]]))
            aligns.append(2.0 / (1.0 + math.exp(-_saturating(it["gap"], r))) - 1.0)
        assert pred[j] == pytest.approx(np.mean(probs), abs=1e-9)
        assert vocab[j] == pytest.approx(np.mean(fulls), abs=1e-9)
        assert align[j] == pytest.approx(np.mean(aligns), abs=1e-9)
    # the fitted bend is 1/ρ² and the curvature the true one (margins; the answer's own is 0)
    u = resp.margins
    for q, it in enumerate(items):
        for j, (_, slope, curv, rho, third) in enumerate(it["margins"]):
            if j == it["answer"]:
                assert u.curvature[q, j] == 0 and u.bend[q, j] == 0
                continue
            assert u.bend[q, j] == pytest.approx(1 / rho**2, rel=1e-6)
            assert u.curvature[q, j] == pytest.approx(curv, rel=1e-6)
            assert u.slope[q, j] == pytest.approx(slope, abs=1e-9)
            assert u.third[q, j] == pytest.approx(third, abs=1e-6)
    # a three-norm probe cannot see the bend: the quadratic of the central differences
    short = helpfulness_response(_saturating_records(items, grid=[-0.25, 0.0, 0.25]))
    assert short.margins.bend is None and short.trust_radius is None


def test_a_quartic_term_is_fitted_as_the_by_hand_saturating_curve():
    items = response_items(10, quartic=2.0, cubic=0.5, seed=4)
    resp = helpfulness_response(_records(items))
    h, norms = 0.25, [-2.0, -0.7, 0.3, 1.6]
    pred = predict_helpfulness(resp, norms, n_boot=0).mean
    for j, r in enumerate(norms):
        vals = []
        for it in items:
            ans = it["answer"]
            probe = [true_scores(it, x * h) for x in (-2, -1, 0, 1, 2)]
            curves = [hand_saturating([s[o] - s[ans] for s in probe], h) for o in range(len(it["a"]))]
            w = [math.exp(c(r)) for c in curves]
            vals.append(w[ans] / sum(w))
        assert pred[j] == pytest.approx(np.mean(vals), abs=1e-9)


def test_only_probe_norms_are_used():
    items = response_items(8)
    rows = _records(items)
    # corrupt every record outside 0, ±h, ±2h: the prediction must not change
    noisy = [dict(r, scores=[x + 50.0 for x in r["scores"]]) if r["kind"] == "helpfulness"
             and abs(r["norm"]) == 1.0 else r for r in rows]
    a = predict_helpfulness(helpfulness_response(rows), [0.8], n_boot=0).mean
    b = predict_helpfulness(helpfulness_response(noisy), [0.8], n_boot=0).mean
    assert a == pytest.approx(b, abs=0)


def test_items_missing_a_probe_norm_are_dropped_and_counted():
    items = response_items(10)
    rows = [r for r in _records(items) if not (r["item"] == 3 and r["norm"] == -0.25)]
    resp = helpfulness_response(rows)
    assert len(resp.answers) == 9 and resp.n_dropped == 1
    assert 3 not in resp.items


def test_band_covers_the_mean_and_collapses_without_bootstrap():
    resp = helpfulness_response(_records(response_items(40)))
    pred = predict_helpfulness(resp, [-1.0, 0.0, 1.0], n_boot=300, seed=3)
    assert np.all(pred.low < pred.mean) and np.all(pred.mean < pred.high)
    again = predict_helpfulness(resp, [-1.0, 0.0, 1.0], n_boot=300, seed=3)
    np.testing.assert_array_equal(pred.low, again.low)
    flat = predict_helpfulness(resp, [1.0], n_boot=0)
    assert flat.low[0] == flat.mean[0] == flat.high[0]


# --- the decomposition -------------------------------------------------------------------


def _taylor_by_finite_differences(predict, eps=1e-3):
    p0, pp, pm = (predict([x]).mean[0] for x in (0.0, eps, -eps))
    return (pp - pm) / (2 * eps), (pp + pm - 2 * p0) / (2 * eps**2)


def test_decomposition_sums_to_the_second_order_coefficient():
    items = response_items(25)
    rows = _records(items)
    resp, aresp = helpfulness_response(rows), alignment_response(rows)
    dec = decompose(resp, aresp, n_boot=200)
    slope, quad = _taylor_by_finite_differences(lambda r: predict_helpfulness(resp, r, n_boot=0))
    assert dec.linear.value == pytest.approx(slope, abs=1e-7)
    assert dec.spread.value + dec.drift.value == pytest.approx(quad, abs=1e-6)
    assert dec.quadratic.value == pytest.approx(quad, abs=1e-6)
    assert dec.spread_share.value == pytest.approx(dec.spread.value / quad, rel=1e-4)
    assert dec.p0.value == pytest.approx(_direct_helpfulness(items, 0.0), abs=1e-12)
    aslope, _ = _taylor_by_finite_differences(lambda r: predict_alignment(aresp, r, n_boot=0))
    assert dec.alignment_slope.value == pytest.approx(aslope, abs=1e-7)
    for est in (dec.linear, dec.spread, dec.drift, dec.alignment_slope):
        assert est.low <= est.value <= est.high and est.low < est.high


def test_decomposition_is_the_true_curves_when_the_probe_resolves_it():
    # quartic scores: the five-point central differences are exact, so the split sums to the
    # r² coefficient of the true mean curve (by finite differences of the direct evaluation)
    items = response_items(25, cubic=0.4, quartic=0.8, seed=9)
    dec = decompose(helpfulness_response(_records(items)), n_boot=50)
    eps = 1e-3
    p0, pp, pm = (_direct_helpfulness(items, x) for x in (0.0, eps, -eps))
    assert dec.linear.value == pytest.approx((pp - pm) / (2 * eps), abs=1e-7)
    assert dec.quadratic.value == pytest.approx((pp + pm - 2 * p0) / (2 * eps**2), abs=1e-6)


def test_spread_and_drift_are_told_apart():
    # no curvature of the scores: everything quadratic is spread
    items = response_items(20)
    for it in items:
        it["c"] = np.zeros_like(it["c"])
    dec = decompose(helpfulness_response(_records(items)), n_boot=50)
    _, quad = _taylor_by_finite_differences(
        lambda r: predict_helpfulness(helpfulness_response(_records(items)), r, n_boot=0))
    assert dec.drift.value == pytest.approx(0.0, abs=1e-12)
    assert dec.spread.value == pytest.approx(quad, abs=1e-6) and dec.spread.value != 0
    # no slope: no linear and no spread term, the whole r² coefficient is drift
    for it in items:
        it["b"] = np.zeros_like(it["b"])
        it["c"] = np.full_like(it["a"], 0.7)
        it["c"][it["answer"]] = -0.9
    dec = decompose(helpfulness_response(_records(items)), n_boot=50)
    assert dec.linear.value == pytest.approx(0.0, abs=1e-12)
    assert dec.spread.value == pytest.approx(0.0, abs=1e-12)
    assert dec.drift.value < 0


# --- the trust radius --------------------------------------------------------------------


def test_trust_radius_is_infinite_for_cubic_scores_and_none_without_2h():
    rows = _records(response_items(10, cubic=0.5))
    assert helpfulness_response(rows).trust_radius == math.inf
    assert alignment_response(rows).trust_radius == math.inf
    short = _records(response_items(10), grid=[-0.25, 0.0, 0.25])
    assert helpfulness_response(short).trust_radius is None
    assert alignment_response(short).probe == Probe(0.25, False)


def test_trust_radius_shrinks_when_a_quartic_term_grows():
    radii = [helpfulness_response(_records(response_items(20, quartic=x))).trust_radius for x in (0.05, 0.5)]
    aradii = [alignment_response(_records(response_items(20, quartic=x))).trust_radius for x in (0.05, 0.5)]
    assert math.isfinite(radii[0]) and radii[1] < radii[0]
    assert math.isfinite(aradii[0]) and aradii[1] < aradii[0]


def test_trust_radius_marks_where_the_true_error_reaches_the_tolerance():
    # quartic scores: the polynomial through the five probe values is the truth, so the
    # radius is exactly where the saturating curve's error reaches the tolerance
    items = response_items(20, cubic=0.3, quartic=0.6)
    resp = helpfulness_response(_records(items), tolerance=0.02)
    rad = resp.trust_radius
    assert resp.tolerance == 0.02 and 0.25 < rad < 16
    inside = np.linspace(-rad, rad, 41)[1:-1] * 0.98
    pred = predict_helpfulness(resp, inside, n_boot=0).mean
    true = np.array([_direct_helpfulness(items, r) for r in inside])
    assert np.abs(pred - true).max() <= 0.02 + 1e-9
    step = 16 / 2048  # the search grid: 64 probe steps of 0.25 in 2048 pieces
    err_at = [abs(predict_helpfulness(resp, [s * (rad + step)], n_boot=0).mean[0]
                  - _direct_helpfulness(items, s * (rad + step))) for s in (1, -1)]
    assert max(err_at) > 0.02 * 0.9
    assert trust_radius(resp, tolerance=0.05) > rad


# --- rows and validation -----------------------------------------------------------------


def test_predicted_points_rows_and_validation_against_a_shifted_curve():
    items = response_items(15)
    rows = _records(items)
    resp, aresp = helpfulness_response(rows), alignment_response(rows)
    grid = np.linspace(-2, 2, 17)
    pred = predicted_points(grid, helpfulness=resp, alignment=[aresp], n_boot=20)
    metrics = {(p["task"], p["metric"]) for p in pred}
    assert metrics == {("qa", "helpfulness"), ("qa", "helpfulness_vocab"), ("harm", "alignment")}
    assert len(pred) == 3 * 17
    assert set(pred[0]) >= {"task", "kind", "metric", "norm", "mean", "low", "high"}
    # measured = truth, helpfulness offset by 0.004 inside, and a collapse beyond |r| > 1
    measured = []
    for r in grid:
        h = _direct_helpfulness(items, r) + 0.004
        if abs(r) > 1.0:
            h = _direct_helpfulness(items, 0.0) - 0.5
        measured.append({"task": "qa", "kind": "helpfulness", "metric": "helpfulness",
                         "norm": float(r), "mean": h})
        measured.append({"task": "harm", "kind": "alignment", "metric": "alignment",
                         "norm": float(r), "mean": _direct_alignment(items, r) - 0.01})
    checks = {(v.task, v.metric): v for v in validate(pred, measured, max_loss=0.15)}
    hv, av = checks[("qa", "helpfulness")], checks[("harm", "alignment")]
    assert hv.window == (-1.0, 1.0) and len(hv.norms) == 9
    assert hv.rmse == pytest.approx(0.004, abs=1e-9) and hv.max_error == pytest.approx(0.004)
    assert len(av.norms) == 17 and av.rmse == pytest.approx(0.01, abs=1e-9)
    assert ("qa", "helpfulness_vocab") not in checks  # not measured: not compared


def test_bad_input_messages():
    rows = _records(response_items(5))
    two = rows + [dict(r, task="other") for r in rows if r["kind"] == "helpfulness"]
    with pytest.raises(TheoryError, match=r"several helpfulness tasks \(qa, other\)"):
        helpfulness_response(two)
    with pytest.raises(TheoryError, match="no alignment task 'nope'.*harm"):
        alignment_response(rows, "nope")
    no_vocab = [{k: v for k, v in r.items() if k != "helpfulness_vocab"} for r in rows]
    resp = helpfulness_response(no_vocab)
    assert not resp.has_vocab
    with pytest.raises(TheoryError, match="no helpfulness_vocab.*vocab=False"):
        predict_helpfulness(resp, [0.0], vocab=True)
    with pytest.raises(TheoryError, match="no helpfulness records"):
        helpfulness_response([r for r in rows if r["kind"] == "alignment"])


def test_full_vocabulary_prediction_is_clipped_at_one_without_overflow():
    items = response_items(12)
    for it in items:
        it["a"] = it["a"] + 2.5  # some answers above log-probability 0: exp(s) > 1 is clipped
    resp = helpfulness_response(_records(items))
    norms = [-40.0, -0.3, 0.0, 0.6, 40.0]  # ±40: scores of order 10³, exp would overflow
    with np.errstate(over="raise", invalid="raise"):
        pred = predict_helpfulness(resp, norms, vocab=True, n_boot=0)
    for j, r in enumerate(norms):
        want = np.mean([math.exp(min(0.0, true_scores(it, r)[it["answer"]])) for it in items])
        assert pred.mean[j] == pytest.approx(want, abs=1e-10)
    assert pred.mean.max() <= 1.0
