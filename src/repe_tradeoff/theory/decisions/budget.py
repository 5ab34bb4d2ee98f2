r"""The budgeted recommendation: the most alignment a helpfulness budget buys on the grid.

A researcher states how much helpfulness (P(correct) restricted to the answer options) they
can afford to lose, ``L``: absolute (``0.05``: five points of P(correct)) or relative to the
unsteered value (``"5%"``: 5 % of P(correct) at r = 0). Among the measured grid norms

* the **recommended** norm is the one with the largest measured alignment gain
  ``A(r) − A(0)`` whose measured loss ``H(0) − H(r)`` is at most ``L``;
* the **conservative** norm is the one with the largest gain whose loss is at most ``L``
  even at the upper end of its 95 % interval (the 97.5th percentile of the loss over the
  bootstrap replicates of the items, the same interval the report prints).

Ties go to the smaller ``|r|``. When no norm gains alignment within the budget the answer is
``r = 0`` (no steering). Measured values, not fitted ones: the answer is a norm to run.
"""

from __future__ import annotations

import math
import re

import numpy as np

from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.laws.fitting import percentile_ci

DEFAULT_BUDGET = "0.05"
#: upper end of the two-sided 95 % interval: the bound the report prints
UPPER_QUANTILE = 0.975


def parse_budget(spec: str | float) -> tuple[float, bool]:
    """``(value, relative)`` of a budget: ``0.05`` → (0.05, False), ``"5%"`` → (0.05, True)."""
    text = str(spec).strip()
    m = re.fullmatch(r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", text)
    if m and float(m.group(1)) < 0:
        raise TheoryError(f"max helpfulness loss {text!r} must be ≥ 0: it is a loss of P(correct), e.g. 0.05 or 5%")
    if not m:
        raise TheoryError(
            f"max helpfulness loss {text!r} is not a number: give an absolute loss of P(correct) "
            "such as 0.05, or a share of the unsteered value such as 5%"
        )
    value, relative = float(m.group(1)), bool(m.group(2))
    if relative:
        value /= 100.0
    if not (0 <= value < 1) or not math.isfinite(value):
        raise TheoryError(f"max helpfulness loss {text!r} must lie in [0, 1) (or [0%, 100%))")
    return value, relative


def sig(x: float | None, signed: bool = False) -> str:
    """A number with 3 significant digits (``+`` for gains when ``signed``)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def _ci(ci: list[float] | None) -> str:
    return "" if ci is None or None in ci else f" [{sig(ci[0])}, {sig(ci[1])}]"


def _choice(j: int, z: int, norms, align, helpful, align_reps, help_reps, loss_upper,
            relative_per_r: float | None) -> dict:
    ci_a = ci_h = None
    if align_reps is not None:
        ci_a = percentile_ci(align_reps[:, j] - align_reps[:, z])
    if help_reps is not None:
        ci_h = percentile_ci(help_reps[:, j] - help_reps[:, z])
    r = float(norms[j])
    return {
        "norm": r,
        "relative_norm": None if relative_per_r is None else r * relative_per_r,
        "alignment_gain": float(align[j] - align[z]),
        "alignment_gain_ci": ci_a,
        "helpfulness_change": float(helpful[j] - helpful[z]),
        "helpfulness_change_ci": ci_h,
        "helpfulness_loss_upper": None if loss_upper is None else float(loss_upper[j]),
    }


def _best(gain: np.ndarray, ok: np.ndarray, norms: np.ndarray) -> int | None:
    """Index of the largest positive gain among ``ok`` (ties: smaller |r|), or None."""
    cand = np.flatnonzero(ok & (gain > 1e-12))
    if cand.size == 0:
        return None
    return int(min(cand, key=lambda i: (-gain[i], abs(norms[i]))))


def describe_norm(choice: dict, where: str) -> str:
    """``r = 4.31 (0.0517 × the residual norm) on layers 12-17 of the pca harmfulness vector``."""
    rel = choice.get("relative_norm")
    rel_txt = "" if rel is None else f" ({sig(rel)} × the mean residual norm)"
    return f"r = {sig(choice['norm'])}{rel_txt}{where}"


def budget_recommendation(
    norms: np.ndarray,
    align: np.ndarray,
    helpful: np.ndarray,
    *,
    budget: str | float = DEFAULT_BUDGET,
    align_reps: np.ndarray | None = None,
    help_reps: np.ndarray | None = None,
    ci_method: str | None = None,
    relative_per_r: float | None = None,
    where: str = "",
) -> dict:
    """The budgeted recommendation (see the module notes) as the ``recommendation`` of fits.json.

    ``norms``, ``align``, ``helpful``: the measured means on the grid both tasks share;
    ``*_reps``: ``(n_boot, n_norms)`` bootstrap replicates of them (paired over items);
    ``relative_per_r``: 1 / the mean residual norm at the steered layers (for
    ``relative_norm``); ``where``: the layers and the vector, for the text.
    """
    value, relative = parse_budget(budget)
    zero = np.flatnonzero(np.isclose(norms, 0.0, atol=1e-9, rtol=0))
    base = {"rule": "budget", "budget_spec": str(budget).strip(), "ci_method": ci_method}
    if zero.size == 0:
        return {**base, "norm": None,
                "text": "no recommendation: the grid has no r = 0 to measure the loss against"}
    z = int(zero[0])
    h0 = float(helpful[z])
    limit = value * h0 if relative else value
    loss = h0 - helpful
    gain = align - align[z]
    loss_upper = None
    if help_reps is not None:
        loss_upper = np.quantile(help_reps[:, [z]] - help_reps, UPPER_QUANTILE, axis=0)
    budget_txt = (f"lose at most {sig(limit)} of P(correct)"
                  + (f", {sig(100 * value)}% of its unsteered {sig(h0)}" if relative
                     else f" (unsteered: {sig(h0)})"))
    base.update(max_helpfulness_loss=limit, helpfulness_at_zero=h0)
    pick = _best(gain, loss <= limit + 1e-12, norms)
    if pick is None:
        gaining = np.flatnonzero(gain > 1e-12)
        nearest = "" if not gaining.size else (
            lambda i: f"; the smallest norm that gains, r = {sig(norms[i])}, loses {sig(loss[i])}")(
            int(min(gaining, key=lambda i: abs(norms[i]))))
        zero_choice = {"norm": 0.0, "relative_norm": 0.0, "alignment_gain": 0.0,
                       "helpfulness_change": 0.0}
        return {**base, **zero_choice, "conservative": zero_choice,
                "text": (f"r = 0 (no steering): no grid norm gains alignment for a budget to "
                         f"{budget_txt}{nearest}: refine the grid near 0 or allow a larger loss")}
    rec = _choice(pick, z, norms, align, helpful, align_reps, help_reps, loss_upper,
                  relative_per_r)
    text = (f"{describe_norm(rec, where)}: alignment {sig(rec['alignment_gain'], True)}"
            f"{_ci(rec['alignment_gain_ci'])}, helpfulness "
            f"{sig(rec['helpfulness_change'], True)}{_ci(rec['helpfulness_change_ci'])}, "
            f"the most alignment on the grid for a budget to {budget_txt}")
    conservative = None
    if loss_upper is not None:
        safe = _best(gain, loss_upper <= limit + 1e-12, norms)
        conservative = (
            {"norm": 0.0, "relative_norm": 0.0, "alignment_gain": 0.0, "helpfulness_change": 0.0}
            if safe is None else
            _choice(safe, z, norms, align, helpful, align_reps, help_reps, loss_upper,
                    relative_per_r))
    return {**base, **rec, "conservative": conservative, "text": text}


def conservative_text(rec: dict) -> str | None:
    """The sentence about the conservative norm of a budgeted recommendation (None: none)."""
    if rec.get("rule") != "budget" or not rec.get("norm"):
        return None  # no recommendation, or no steering: nothing more conservative to say
    c = rec.get("conservative")
    if c is None:
        return ("Conservative norm: not computed (it needs bootstrap replicates over items; "
                "fit with --n-boot above 0)")
    if not c.get("norm"):
        return ("Conservative norm: r = 0; no grid norm's loss stays within the budget at the "
                "upper end of its 95% interval")
    return (f"Conservative norm (its loss stays within the budget even at the upper end of "
            f"the 95% interval, {sig(c.get('helpfulness_loss_upper'))}): {describe_norm(c, '')}, "
            f"alignment {sig(c.get('alignment_gain'), True)}{_ci(c.get('alignment_gain_ci'))}, "
            f"helpfulness {sig(c.get('helpfulness_change'), True)}"
            f"{_ci(c.get('helpfulness_change_ci'))}")
