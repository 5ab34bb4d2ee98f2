"""The budgeted recommendation, checked against picks computed here from the run files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from repe_tradeoff.theory import TheoryError, fit_run
from repe_tradeoff.theory.decisions.budget import conservative_text, parse_budget
from tests.helpers import make_run


def _curves(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(norms, alignment, helpfulness) on the common grid, read straight from points.jsonl."""
    rows = [json.loads(line) for line in (run / "points.jsonl").read_text().splitlines()]
    align = {r["norm"]: r["mean"] for r in rows if r["metric"] == "alignment"}
    helpful = {r["norm"]: r["mean"] for r in rows if r["metric"] == "helpfulness"}
    norms = np.array(sorted(set(align) & set(helpful)))
    return norms, np.array([align[r] for r in norms]), np.array([helpful[r] for r in norms])


def _independent_pick(run: Path, limit_of) -> tuple[float, float]:
    """The grid norm with the most alignment gain whose helpfulness loss is within budget."""
    norms, a, h = _curves(run)
    z = int(np.flatnonzero(norms == 0.0)[0])
    limit = limit_of(h[z])
    ok = [i for i in range(norms.size) if h[z] - h[i] <= limit and a[i] - a[z] > 0]
    if not ok:
        return 0.0, limit
    best = max(ok, key=lambda i: (a[i] - a[z], -abs(norms[i])))
    return float(norms[best]), limit


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("budget") / "run", norms=np.round(np.linspace(-4, 4, 33), 6))


@pytest.mark.parametrize("spec, limit_of", [
    ("0.05", lambda h0: 0.05),
    ("0.01", lambda h0: 0.01),
    ("0.3", lambda h0: 0.3),
    ("10%", lambda h0: 0.10 * h0),
])
def test_budgeted_pick_matches_an_independent_computation(run: Path, spec, limit_of):
    fits = fit_run(run, n_boot=40, n_draws=100, max_helpfulness_loss=spec)
    rec = fits["recommendation"]
    norm, limit = _independent_pick(run, limit_of)
    assert rec["rule"] == "budget" and rec["budget_spec"] == spec
    assert rec["max_helpfulness_loss"] == pytest.approx(limit)
    assert rec["norm"] == pytest.approx(norm)
    assert -rec["helpfulness_change"] <= limit + 1e-12
    assert fits["settings"]["max_helpfulness_loss"] == spec
    # the conservative norm keeps the upper end of its interval within the budget
    cons = rec["conservative"]
    if cons["norm"]:
        assert cons["helpfulness_loss_upper"] <= limit + 1e-12
        assert cons["helpfulness_loss_upper"] == pytest.approx(-cons["helpfulness_change_ci"][0])
        assert 0 < cons["alignment_gain"] <= rec["alignment_gain"] + 1e-12
    # the λ rule is kept as a second answer
    assert fits["lambda_recommendation"]["rule"] == "lambda"


def test_default_budget_is_five_points_of_p_correct(run: Path):
    rec = fit_run(run, n_boot=0, n_draws=100)["recommendation"]
    assert rec["budget_spec"] == "0.05" and rec["max_helpfulness_loss"] == 0.05
    assert rec["norm"] == pytest.approx(_independent_pick(run, lambda h0: 0.05)[0])
    assert rec["conservative"] is None  # no replicates, no upper bound
    assert "n-boot" in conservative_text(rec)


def _write_items(run: Path, losses: dict[float, tuple[float, float]], n: int = 200) -> None:
    """Alignment = norm; helpfulness per item = 0.8 − loss + noise (spread given per norm)."""
    rng = np.random.default_rng(1)
    items = []
    for r, (loss, spread) in losses.items():
        noise = rng.normal(0, spread, n) if spread else np.zeros(n)
        for q in range(n):
            items.append({"task": "harm", "kind": "alignment", "norm": r, "item": q,
                          "alignment": 0.1 * r})
            items.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": q,
                          "helpfulness": 0.8 - loss + noise[q]})
    run.mkdir(parents=True)
    (run / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    from repe_tradeoff.runs import write_points

    write_points(run)


def test_conservative_norm_leaves_out_a_norm_whose_loss_is_uncertain(tmp_path: Path):
    # r = 2 loses 0.02 ± a little; r = 3 loses 0.045 with a wide spread; r = 4 loses 0.2
    _write_items(tmp_path / "run", {0.0: (0.0, 0.0), 1.0: (0.01, 0.01), 2.0: (0.02, 0.01),
                                    3.0: (0.045, 0.3), 4.0: (0.2, 0.01)})
    rec = fit_run(tmp_path / "run", choices=4, n_boot=200, n_draws=100)["recommendation"]
    assert rec["norm"] == 3.0  # measured loss ≈ 0.045 ≤ 0.05
    assert rec["conservative"]["norm"] == 2.0
    assert rec["helpfulness_loss_upper"] > 0.05


def test_no_norm_within_budget_recommends_no_steering(tmp_path: Path):
    _write_items(tmp_path / "run", {0.0: (0.0, 0.0), 1.0: (0.1, 0.01), 2.0: (0.3, 0.01)})
    rec = fit_run(tmp_path / "run", choices=4, n_boot=20, n_draws=100)["recommendation"]
    assert rec["norm"] == 0.0 and rec["text"].startswith("r = 0 (no steering)")
    assert "the smallest norm that gains, r = 1, loses 0.1" in rec["text"]
    assert rec["conservative"]["norm"] == 0.0 and conservative_text(rec) is None


@pytest.mark.parametrize("spec, value, relative", [("0.05", 0.05, False), ("5%", 0.05, True),
                                                   (" 12.5 % ", 0.125, True), (0.1, 0.1, False)])
def test_parse_budget(spec, value, relative):
    assert parse_budget(spec) == (pytest.approx(value), relative)


@pytest.mark.parametrize("spec", ["five", "-0.1", "1.5", "150%", ""])
def test_bad_budgets_say_what_to_give(spec):
    with pytest.raises(TheoryError, match="max helpfulness loss"):
        parse_budget(spec)
