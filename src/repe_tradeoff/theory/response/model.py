"""One quantity's response to the steering norm, from its values at the probe norms.

Split ``f(r) − f(0)`` into its odd part ``O(r) = (f(r) − f(−r))/2`` and even part
``E(r) = (f(r) + f(−r))/2 − f(0)``; the probe gives both at ``h`` (and ``2h``).

* Three norms ``0, ±h``: the quadratic ``f(0) + g r + c r²/2`` with ``g = O(h)/h`` and
  ``c = 2 E(h)/h²`` (the central differences).
* Five norms ``0, ±h, ±2h``: five numbers fix five parameters. The odd part is the cubic
  through ``O(h), O(2h)``: ``g = (8 O(h) − O(2h)) / 6h`` and ``f''' = (O(2h) − 2 O(h)) / h³``.
  The even part is the *saturating* curve ::

      E(r) = c r² / (1 + √(1 + κ r²))        (= c ρ² (√(1 + r²/ρ²) − 1), κ = 1/ρ²)

  whose curvature ``c`` at 0 fades beyond ``|r| ≈ ρ``, so that ``E`` grows like ``|r|``
  rather than ``r²``. With ``q = E(2h)/E(h)`` (4 for a parabola, 2 for ``|r|``) it passes
  through both values when ``2 < q < 4``: ``t = 2 (4 − q) / ((q − 2)(q + 2))``,
  ``c = E(h)(t + 2)/h²``, ``κ = t (t + 2)/h²``. Where the probe does not show a fading
  curvature (``q ≥ 4``, or ``q ≤ 2``) the even part stays the parabola through ``E(h)``
  (``κ = 0``): the curve never bends more steeply than the quadratic.

The same five values also fix a polynomial, ``f(0) + g r + f''' r³/6 + a r² + b r⁴`` with
``b = (E(2h) − 4 E(h)) / 12h⁴`` and ``a = (E(h) − b h⁴)/h²``: where the two disagree, the
probe alone no longer tells the curve (the trust radius in :mod:`.response`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A fading curvature is used only where ``2 + _Q_MARGIN < q < 4``: at ``q → 2`` the curve
#: becomes ``|r|`` (κ → ∞); this keeps κ finite in floating point, not a fit choice.
_Q_MARGIN = 1e-9


@dataclass(frozen=True)
class ResponseCurve:
    """Per-element response of an array-valued quantity (any shape ``S``).

    ``value``, ``slope`` (f'(0)) and ``curvature`` (f''(0)) are arrays of shape ``S``;
    ``third`` (f'''(0)), ``bend`` (κ ≥ 0) and the polynomial's ``quartic`` coefficients
    ``(a, b)`` are None for a three-norm probe.
    """

    value: np.ndarray
    slope: np.ndarray
    curvature: np.ndarray
    third: np.ndarray | None = None
    bend: np.ndarray | None = None
    quartic: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def five_point(self) -> bool:
        return self.third is not None

    @property
    def resolved_curvature(self) -> np.ndarray:
        """f''(0) as far as the probe resolves it: ``2 E(h)/h²`` with three norms, the
        five-point ``(16 E(h) − E(2h)) / 6h²`` (the polynomial's) with five. It equals
        ``curvature`` for a parabola and to first order in ``4 − q``; unlike ``curvature`` it
        does not extrapolate a bend sharper than ``h`` down to ``r = 0``."""
        return self.curvature if self.quartic is None else 2 * self.quartic[0]

    def at(self, r: np.ndarray, *, polynomial: bool = False) -> np.ndarray:
        """The curve at norms ``r``: shape ``(len(r),) + S``. ``polynomial`` gives the quartic
        through the same five probe values instead of the saturating curve."""
        r = np.asarray(r, dtype=float).reshape((-1,) + (1,) * self.value.ndim)
        out = self.value + r * self.slope
        if self.third is not None:
            out = out + r**3 * self.third / 6
        if polynomial:
            if self.quartic is None:
                raise ValueError("the polynomial needs a five-norm probe (0, ±h, ±2h)")
            a, b = self.quartic
            return out + a * r**2 + b * r**4
        bend = 0.0 if self.bend is None else self.bend
        return out + self.curvature * r * r / (1.0 + np.sqrt(1.0 + bend * r * r))


def fit_curve(values: np.ndarray, h: float, five_point: bool) -> ResponseCurve:
    """The response of values at the probe norms (axis 0: ``-2h, -h, 0, h, 2h`` when
    ``five_point``, else ``-h, 0, h``)."""
    v = np.asarray(values, dtype=float)
    if five_point:
        m2, m1, z, p1, p2 = v
    else:
        m1, z, p1 = v
    odd1, even1 = (p1 - m1) / 2, (p1 + m1) / 2 - z
    if not five_point:
        return ResponseCurve(value=z, slope=odd1 / h, curvature=2 * even1 / h**2)
    odd2, even2 = (p2 - m2) / 2, (p2 + m2) / 2 - z
    with np.errstate(divide="ignore", invalid="ignore"):
        q = even2 / even1
        fading = np.isfinite(q) & (q > 2 + _Q_MARGIN) & (q < 4)
        t = np.where(fading, 2 * (4 - q) / ((q - 2) * (q + 2)), 0.0)
    b = (even2 - 4 * even1) / (12 * h**4)
    return ResponseCurve(
        value=z,
        slope=(8 * odd1 - odd2) / (6 * h),
        curvature=even1 * (t + 2) / h**2,
        third=(odd2 - 2 * odd1) / h**3,
        bend=t * (t + 2) / h**2,
        quartic=((even1 - b * h**4) / h**2, b),
    )
