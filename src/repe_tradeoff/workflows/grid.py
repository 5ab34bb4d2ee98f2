"""Norm grids: ``-8:8:0.5`` or ``-2,0,2`` → sorted unique norms (plain Python, no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from repe_tradeoff.errors import SpecError


def parse_norms(spec: str | Sequence[float]) -> list[float]:
    """``-8:8:0.5`` (start:stop:step, stop included), ``-2,0,2``, or a list → sorted unique norms."""
    if isinstance(spec, str):
        spec = spec.strip()
        if not spec:
            raise SpecError("empty norm grid: use e.g. `-8:8:0.5` or `-2,0,2`")
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 3:
                raise SpecError(f"norm grid {spec!r}: use start:stop:step, e.g. `-8:8:0.5`")
            try:
                start, stop, step = (float(p) for p in parts)
            except ValueError:
                raise SpecError(
                    f"norm grid {spec!r} has a part that is not a number: use e.g. `-8:8:0.5` or `-2,0,2`"
                ) from None
            if step <= 0 or not all(map(math.isfinite, (start, stop, step))):
                raise SpecError(f"norm grid {spec!r}: the step must be a positive finite number")
            if stop < start:
                raise SpecError(
                    f"norm grid {spec!r}: stop is below start; write start:stop:step with start ≤ stop, "
                    f"e.g. `{parts[1]}:{parts[0]}:{parts[2]}`"
                )
            span = (stop - start) / step  # inf when the range overflows a float
            if span >= 100_000:
                raise SpecError(f"norm grid {spec!r} has over 100000 norms; use a coarser step")
            count = int(math.floor(span + 1e-9)) + 1
            values = [start + i * step for i in range(count)]
        else:
            try:
                values = [float(p) for p in spec.split(",") if p.strip()]
            except ValueError:
                raise SpecError(
                    f"norm grid {spec!r} has a part that is not a number: use e.g. `-8:8:0.5` or `-2,0,2`"
                ) from None
    else:
        values = [float(v) for v in spec]
    if not values:
        raise SpecError("empty norm grid: use e.g. `-8:8:0.5` or `-2,0,2`")
    if not all(math.isfinite(v) for v in values):
        raise SpecError(f"norm grid {spec!r}: norms must be finite numbers (no inf or nan)")
    # round away float noise from start + i*step so that 0.1*3 is 0.3 in every file
    return sorted({round(v, 10) + 0.0 for v in values})
