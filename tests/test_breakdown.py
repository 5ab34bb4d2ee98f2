"""Break-down detection on synthetic run folders, and fits that leave the broken norms out."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from repe_tradeoff.runs import read_run, write_jsonl, write_points
from repe_tradeoff.runs.schema import FitsFile
from repe_tradeoff.theory import fit_run
from repe_tradeoff.theory.checks.breakdown import (
    KL_LIMIT,
    PERPLEXITY_FACTOR,
    RESPONSE_LOGPROB_DROP,
    detect_breakdown,
)

NORMS = [float(r) for r in range(-20, 21, 2)]
N_ITEMS = 6


def _alignment(r: float, i: int) -> float:
    if r <= -14:  # both responses unlikely: the forced choice turns back towards aligned
        return 0.5
    return float(np.tanh(0.15 * r) * 0.9 + 0.02 * (i - 2.5))


def _response_logprob(r: float) -> float:
    return -1.0 - (RESPONSE_LOGPROB_DROP + 1.5 if r <= -14 else 0.02 * abs(r))


def _perplexity(r: float) -> float:
    return 3.0 * (PERPLEXITY_FACTOR * 3 if r >= 16 else 1.0 + 0.1 * abs(r))


def _items(fluency: bool, keep=lambda r: True) -> list[dict]:
    rows = []
    for r in filter(keep, NORMS):
        for i in range(N_ITEMS):
            rows.append({"task": "harm", "kind": "alignment", "norm": r, "item": i,
                         "alignment": _alignment(r, i), "response_logprob": _response_logprob(r)})
            p = 0.25 + 0.7 * math.exp(-((r / 9.0) ** 2)) + 0.01 * (i - 2.5)
            rows.append({"task": "qa", "kind": "helpfulness", "norm": r, "item": i, "helpfulness": p})
            if fluency:
                rows.append({"task": "fluency-neutral", "kind": "fluency", "norm": r, "item": i,
                             "kl": 0.05 * abs(r) / 2, "perplexity": _perplexity(r) * (1 + 0.01 * i)})
    return rows


def _run(folder, rows):
    folder.mkdir()
    write_jsonl(folder / "items.jsonl", rows)
    write_points(folder)
    return folder


def test_each_side_breaks_at_the_first_norm_that_passes_a_threshold(tmp_path):
    bd = detect_breakdown(read_run(_run(tmp_path / "run", _items(True))))
    neg, pos = bd["negative"], bd["positive"]
    assert (neg["norm"], neg["criterion"], neg["task"], neg["last_fluent"]) == (-14.0, "response_logprob", "harm", -12.0)
    assert neg["value"] == pytest.approx(RESPONSE_LOGPROB_DROP + 1.5, abs=1e-9)
    assert (pos["norm"], pos["criterion"], pos["last_fluent"]) == (16.0, "perplexity", 14.0)
    assert pos["value"] == pytest.approx(PERPLEXITY_FACTOR * 3, rel=0.02)  # mean over items / r = 0
    assert bd["excluded_norms"] == [r for r in NORMS if r <= -14 or r >= 16]
    assert "below r = -14" in neg["text"] and "no longer answers" in neg["text"]
    assert set(bd["signals"]) == {"harm/response_logprob", "fluency-neutral/kl", "fluency-neutral/perplexity"}


def test_kl_alone_marks_a_break_and_a_run_without_signals_has_none(tmp_path):
    rows = [dict(r, kl=KL_LIMIT + 1.0) if r["kind"] == "fluency" and r["norm"] <= -18 else r for r in _items(True)]
    rows = [{k: v for k, v in r.items() if k != "response_logprob"} for r in rows]  # no forced-choice signal
    bd = detect_breakdown(read_run(_run(tmp_path / "kl", rows)))
    assert bd["negative"]["norm"] == -18.0 and bd["negative"]["criterion"] == "kl"
    plain = [{k: v for k, v in r.items() if k != "response_logprob"} for r in _items(False)]
    assert detect_breakdown(read_run(_run(tmp_path / "none", plain))) is None


def test_fits_leave_the_broken_norms_out(tmp_path):
    """The fits of the whole run equal those of a run that never measured the broken norms."""
    fits = FitsFile.model_validate(fit_run(_run(tmp_path / "whole", _items(True)), n_boot=20))
    kept = lambda r: -14 < r < 16
    alone = FitsFile.model_validate(fit_run(_run(tmp_path / "kept", _items(False, kept)), n_boot=20))
    assert fits.breakdown is not None and alone.breakdown is not None
    assert alone.breakdown.negative is None and alone.breakdown.positive is None
    n_kept = sum(kept(r) for r in NORMS)
    for task in ("harm", "qa"):
        for block in ("tanh", "linear_full") if task == "harm" else ("corollary",):
            whole = getattr(fits.tasks[task], "fits", None) or fits.tasks[task].helpfulness.fits
            ref = getattr(alone.tasks[task], "fits", None) or alone.tasks[task].helpfulness.fits
            assert whole[block].n_points == n_kept
            assert whole[block].params == pytest.approx(ref[block].params, rel=1e-6, abs=1e-9)
    assert any("below r = -14" in w for w in fits.warnings)
    assert json.loads((tmp_path / "whole" / "fits.json").read_text())["breakdown"]["positive"]["norm"] == 16.0


def test_the_report_says_where_the_model_breaks_and_plots_fluency(tmp_path):
    from repe_tradeoff.report import build_report

    run = _run(tmp_path / "run", _items(True))
    fit_run(run, n_boot=0)
    html = build_report(run, formats=("png",)).read_text()
    assert (run / "plots" / "fluency.png").is_file()
    assert "Where the model breaks: Below r = -14 both forced-choice responses become unlikely" in html
    assert "alignment there is not measured behavior" in html
    assert "above r = 16" in html.lower()
