r"""The curves the theory fits: alignment and helpfulness as functions of the steering norm ``r``.

Alignment
---------
With two responses whose logit gap moves linearly in ``r`` (gap ``Δ0 + c·r``), the
behavior expectation is ``B(r) = tanh((Δ0 + c·r)/2)``; we fit ``tanh(a·r + b)``, so
``a = c/2`` and ``b = Δ0/2``. ``tanh_scaled`` (``A·tanh(a·r + b)``, ``0 < A ≤ 1``) allows a
curve that saturates below ±1, and ``linear_full`` is the straight line on the whole grid.

Helpfulness over the full vocabulary (chance 0)
-----------------------------------------------
The paper's corollary: with baseline odds against the correct answer
``a = Σ_{i≠c} exp(z_i − z_c)`` and a shared Gaussian perturbation ``X ~ N(0, σ²r²)``,
``P(r) ≈ 1/(1 + a·E[e^X]) = 1/(1 + a·exp(σ²r²/2)) ≈ 1/(1 + a + a(b²/2)·r²)`` with ``b = σ``.

Helpfulness restricted to ``k`` options (chance ``1/k``)
--------------------------------------------------------
The corollary above decays to 0, but a probability renormalised over ``k`` options decays
to chance ``1/k``: when every option's logit gets its own large perturbation, the options
become exchangeable. We therefore write the curve in terms of the chance-corrected
probability ``Q = (P − 1/k)/(1 − 1/k)`` (0 at chance, 1 when certain) and assume that
``Q`` follows the corollary's shape::

    P(r) = 1/k + (1 − 1/k) / (1 + a + a·(b²/2)·r²)

Properties: ``P(0) = p0 = 1/k + (1 − 1/k)/(1 + a)``, i.e. ``a = (1 − p0)/(p0 − 1/k)``, the
odds of a wrong answer against a correct-beyond-chance one; ``P → 1/k`` as ``|r| → ∞``;
``P ≈ p0 − (1 − 1/k)·a(b²/2)/(1 + a)²·r²`` near 0 (the quadratic loss); for ``k → ∞``
(chance 0) it is exactly the full-vocabulary corollary, so one function serves both. The
assumption is that the corollary's shape carries over to the chance-corrected scale; it is
a two-parameter curve with the right value at 0, the right curvature sign and the right
limit, not an exact average of the Gaussian model (``theory.checks.assumptions.a3_helpfulness``
computes that average by Monte Carlo).

The authors' four-option fit ``0.5/(1 + a + a(b²/2)r²) + 0.25`` is *not* the ``k = 4`` case
of this form: its amplitude 0.5 differs from ``1 − 1/k = 0.75`` and caps ``P(0)`` at 0.75.
It is an empirical amplitude; we keep it, for four options only, as ``corollary_paper`` so
that fits can be compared with the paper's.

The second-order form above comes from ``E[e^X] = exp(σ²r²/2) ≈ 1 + σ²r²/2``; without that
last step the same average gives ``corollary_exact``, ``1/(1 + a·exp(b²r²/2))`` (on the
chance-corrected scale for ``k`` options), which decays to chance much faster than the
``1/r²`` tail of the second-order form. If the shift has a drift, ``X ~ N(μr, σ²r²)``, then
``a·E[e^X] = a·exp(μr + σ²r²/2) = a'·exp(σ²(r − r0)²/2)`` with ``r0 = −μ/σ²`` and
``a' = a·exp(−μ²/(2σ²))``: the exact form with its peak moved to ``r0``
(``corollary_exact_shifted``; ``corollary_shifted`` is the second-order form with a centre).

Alternatives used for model comparison: a Gaussian bump ``1/k + A·exp(−r²/(2s²))`` (and
with a free centre ``r0``), a logistic decay to chance ``1/k + A/(1 + exp((|r| − m)/s))``,
and a straight line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from repe_tradeoff.theory.errors import TheoryError

Start = tuple[float, ...]


@dataclass(frozen=True)
class Law:
    """A curve family: its parameters, bounds, formula and how to pick starting values."""

    name: str
    params: tuple[str, ...]
    formula: str
    func: Callable[..., np.ndarray]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    starts: Callable[[np.ndarray, np.ndarray], list[Start]]
    linear: bool = False  # solved exactly by weighted least squares

    def __call__(self, r, *p) -> np.ndarray:
        return self.func(np.asarray(r, dtype=float), *p)

    @property
    def bounded(self) -> bool:
        return any(np.isfinite(self.lower)) or any(np.isfinite(self.upper))


_INF = np.inf


def _span(r: np.ndarray) -> float:
    s = float(np.max(np.abs(r))) if r.size else 1.0
    return s if s > 0 else 1.0


def _y0(r: np.ndarray, y: np.ndarray) -> float:
    return float(y[int(np.argmin(np.abs(r)))])


def _peak(r: np.ndarray, y: np.ndarray) -> float:
    return float(r[int(np.argmax(y))])


# ---------------------------------------------------------------- alignment
def tanh_law() -> Law:
    def f(r, a, b):
        return np.tanh(a * r + b)

    def starts(r, y):
        R = _span(r)
        out = []
        for sign in (1.0, -1.0):
            for u in (0.5, 2.0, 8.0):
                for b in (-1.0, 0.0, 1.0):
                    out.append((sign * u / R, b))
        return out

    return Law("tanh", ("a", "b"), "tanh(a*r + b)", f, (-_INF, -_INF), (_INF, _INF), starts)


def tanh_scaled_law() -> Law:
    def f(r, A, a, b):
        return A * np.tanh(a * r + b)

    def starts(r, y):
        A = float(np.clip(np.max(np.abs(y)), 0.05, 1.0))
        R = _span(r)
        return [
            (A, sign * u / R, b)
            for sign in (1.0, -1.0)
            for u in (0.5, 2.0, 8.0)
            for b in (-1.0, 0.0, 1.0)
        ]

    return Law(
        "tanh_scaled", ("A", "a", "b"), "A*tanh(a*r + b)", f,
        (0.0, -_INF, -_INF), (1.0, _INF, _INF), starts,
    )


def linear_law(name: str = "linear") -> Law:
    def f(r, slope, intercept):
        return slope * r + intercept

    return Law(
        name, ("slope", "intercept"), "slope*r + intercept", f,
        (-_INF, -_INF), (_INF, _INF), lambda r, y: [(0.0, float(np.mean(y)))], linear=True,
    )


def quadratic_law() -> Law:
    def f(r, c0, c1, c2):
        return c0 + c1 * r + c2 * r**2

    return Law(
        "quadratic", ("c0", "c1", "c2"), "c0 + c1*r + c2*r^2", f,
        (-_INF,) * 3, (_INF,) * 3, lambda r, y: [(float(np.mean(y)), 0.0, 0.0)], linear=True,
    )


# -------------------------------------------------------------- helpfulness
def _odds_start(p0: float, chance: float, amp: float) -> float:
    lo = chance + 1e-3 * amp
    p0 = min(max(p0, lo), chance + amp * (1 - 1e-3))
    return max(amp / (p0 - chance) - 1.0, 1e-3)


def _corollary_starts(chance: float, amp: float, shifted: bool):
    def starts(r, y):
        R = _span(r)
        a0s = {_odds_start(_y0(r, y), chance, amp), _odds_start(float(np.max(y)), chance, amp)}
        centres = (0.0, _peak(r, y)) if shifted else (None,)
        out = []
        for a0 in a0s:
            for frac in (0.1, 0.2, 0.4):
                b = float(np.sqrt(2 * (1 + a0) / a0)) / (frac * R)
                for c in centres:
                    out.append((a0, b) if c is None else (a0, b, c))
        return out

    return starts


def corollary_law(chance: float) -> Law:
    amp = 1.0 - chance

    def f(r, a, b):
        return chance + amp / (1.0 + a + a * (b * b / 2.0) * r**2)

    formula = (
        "1/(1 + a + a*(b^2/2)*r^2)" if chance == 0
        else f"{chance:g} + {amp:g}/(1 + a + a*(b^2/2)*r^2)"
    )
    return Law(
        "corollary", ("a", "b"), formula, f, (1e-9, 0.0), (1e6, 1e4),
        _corollary_starts(chance, amp, False),
    )


def corollary_shifted_law(chance: float) -> Law:
    """The second-order corollary centred at ``r0``."""
    amp = 1.0 - chance

    def f(r, a, b, r0):
        return chance + amp / (1.0 + a + a * (b * b / 2.0) * (r - r0) ** 2)

    formula = f"{chance:g} + {amp:g}/(1 + a + a*(b^2/2)*(r - r0)^2)"
    return Law(
        "corollary_shifted", ("a", "b", "r0"), formula, f, (1e-9, 0.0, -_INF), (1e6, 1e4, _INF),
        _corollary_starts(chance, amp, True),
    )


def _exact_starts(chance: float, amp: float, shifted: bool):
    def starts(r, y):
        R = _span(r)
        a0s = {_odds_start(_y0(r, y), chance, amp), _odds_start(float(np.max(y)), chance, amp)}
        centres = (0.0, _peak(r, y)) if shifted else (None,)
        out = []
        for a0 in a0s:
            for frac in (0.1, 0.2, 0.4):
                b = float(np.sqrt(2 * np.log((1 + 2 * a0) / a0))) / (frac * R)
                for c in centres:
                    out.append((a0, b) if c is None else (a0, b, c))
        return out

    return starts


def _exact_curve(r, chance: float, amp: float, a, b):
    z = np.minimum(b * b / 2.0 * r**2, 700.0)
    with np.errstate(over="ignore"):  # a·e^z → inf saturates to chance, as it should
        return chance + amp / (1.0 + a * np.exp(z))


def corollary_exact_law(chance: float) -> Law:
    amp = 1.0 - chance

    def f(r, a, b):
        return _exact_curve(r, chance, amp, a, b)

    formula = (
        "1/(1 + a*exp(b^2*r^2/2))" if chance == 0
        else f"{chance:g} + {amp:g}/(1 + a*exp(b^2*r^2/2))"
    )
    return Law(
        "corollary_exact", ("a", "b"), formula, f, (1e-9, 0.0), (1e6, 1e4),
        _exact_starts(chance, amp, False),
    )


def corollary_exact_shifted_law(chance: float) -> Law:
    amp = 1.0 - chance

    def f(r, a, b, r0):
        return _exact_curve(r - r0, chance, amp, a, b)

    formula = f"{chance:g} + {amp:g}/(1 + a*exp(b^2*(r - r0)^2/2))"
    return Law(
        "corollary_exact_shifted", ("a", "b", "r0"), formula, f,
        (1e-9, 0.0, -_INF), (1e6, 1e4, _INF), _exact_starts(chance, amp, True),
    )


def corollary_paper_law() -> Law:
    """The authors' four-option fit ``0.5/(1 + a + a(b²/2)r²) + 0.25`` (k = 4 only)."""

    def f(r, a, b):
        return 0.25 + 0.5 / (1.0 + a + a * (b * b / 2.0) * r**2)

    return Law(
        "corollary_paper", ("a", "b"), "0.25 + 0.5/(1 + a + a*(b^2/2)*r^2)", f,
        (1e-9, 0.0), (1e6, 1e4), _corollary_starts(0.25, 0.5, False),
    )


def gaussian_law(chance: float) -> Law:
    def f(r, A, s):
        return chance + A * np.exp(-(r**2) / (2.0 * s * s))

    def starts(r, y):
        R = _span(r)
        A = max(_y0(r, y) - chance, 1e-3)
        return [(A, frac * R) for frac in (0.1, 0.2, 0.4)]

    return Law(
        "gaussian", ("A", "s"), f"{chance:g} + A*exp(-r^2/(2*s^2))", f,
        (0.0, 1e-6), (1.0, _INF), starts,
    )


def gaussian_shifted_law(chance: float) -> Law:
    def f(r, A, s, r0):
        return chance + A * np.exp(-((r - r0) ** 2) / (2.0 * s * s))

    def starts(r, y):
        R = _span(r)
        A = max(float(np.max(y)) - chance, 1e-3)
        return [(A, frac * R, c) for frac in (0.1, 0.2, 0.4) for c in (0.0, _peak(r, y))]

    return Law(
        "gaussian_shifted", ("A", "s", "r0"), f"{chance:g} + A*exp(-(r - r0)^2/(2*s^2))", f,
        (0.0, 1e-6, -_INF), (1.0, _INF, _INF), starts,
    )


def logistic_law(chance: float) -> Law:
    def f(r, A, m, s):
        z = np.clip((np.abs(r) - m) / s, -500, 500)
        return chance + A / (1.0 + np.exp(z))

    def starts(r, y):
        R = _span(r)
        out = []
        for frac in (0.1, 0.2, 0.4):
            m = frac * R
            for sfrac in (0.25, 0.5):
                s = sfrac * m
                A = max(_y0(r, y) - chance, 1e-3) * (1.0 + np.exp(-m / s))
                out.append((min(A, 1.0), m, s))
        return out

    return Law(
        "logistic", ("A", "m", "s"), f"{chance:g} + A/(1 + exp((|r| - m)/s))", f,
        (0.0, 0.0, 1e-6), (1.0, _INF, _INF), starts,
    )


def alignment_laws() -> dict[str, Law]:
    """Candidates compared on the whole grid for an alignment curve."""
    return {law.name: law for law in (tanh_law(), tanh_scaled_law(), linear_law("linear_full"))}


#: The helpfulness curves derived from the paper's model (the rest are empirical shapes).
THEORY_CURVES = (
    "corollary",
    "corollary_paper",
    "corollary_shifted",
    "corollary_exact",
    "corollary_exact_shifted",
)


def helpfulness_laws(chance: float, k: int | None) -> dict[str, Law]:
    """Candidates compared on the whole grid for a helpfulness curve with chance level ``chance``.

    ``corollary_paper`` (the authors' literal four-option fit) is included when ``k == 4``.
    """
    laws = [corollary_law(chance)]
    if k == 4 and chance == 0.25:
        laws.append(corollary_paper_law())
    laws += [
        corollary_shifted_law(chance),
        corollary_exact_law(chance),
        corollary_exact_shifted_law(chance),
        gaussian_law(chance),
        gaussian_shifted_law(chance),
        logistic_law(chance),
        linear_law("linear"),
    ]
    return {law.name: law for law in laws}


def law_names() -> list[str]:
    """Every law :func:`get_law` knows."""
    return sorted({*alignment_laws(), *helpfulness_laws(0.25, 4), "quadratic"})


def get_law(name: str, *, chance: float = 0.0) -> Law:
    """The law called ``name`` (``chance`` is the helpfulness floor: ``1/k``, or 0)."""
    if not isinstance(name, str) or name not in law_names():
        raise TheoryError(f"unknown law {name!r}; use one of: {', '.join(law_names())}")
    if name == "corollary_paper":
        return corollary_paper_law()
    if name == "quadratic":
        return quadratic_law()
    return {**alignment_laws(), **helpfulness_laws(chance, None)}[name]


def evaluate(name: str, params: Mapping[str, float] | Sequence[float], r, *, chance: float = 0.0):
    """Evaluate a fitted curve from ``fits.json`` at norms ``r``.

    ``params`` is a fit block's ``params`` (a mapping with exactly the law's parameter
    names, or the values in the law's order); ``chance`` is the curve's ``chance`` (``1/k``
    for the options-restricted metric, 0 for the vocabulary).
    """
    law = get_law(name, chance=chance)
    expected = ", ".join(law.params)
    if isinstance(params, Mapping):
        if set(params) != set(law.params):
            raise TheoryError(f"law {name!r} takes parameters ({expected}), got "
                              f"({', '.join(map(str, params))})")
        values = [params[k] for k in law.params]
    else:
        values = list(params)
        if len(values) != len(law.params):
            raise TheoryError(f"law {name!r} takes {len(law.params)} parameters ({expected}), "
                              f"got {len(values)}")
    try:
        p = [float(x) for x in values]
    except (TypeError, ValueError):
        raise TheoryError(f"law {name!r}: parameters ({expected}) must be numbers, got "
                          f"{values!r}") from None
    return law(np.asarray(r, dtype=float), *p)
