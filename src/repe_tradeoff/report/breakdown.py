"""Where the model breaks (fits.json's ``breakdown``), in plain words for the report."""

from __future__ import annotations

from repe_tradeoff.report._io import RunFiles


def breakdown_lines(run: RunFiles) -> list[str]:
    """One line per side where the model stops producing language, then the criterion."""
    bd = run.fits.breakdown if run.fits else None
    if bd is None:
        return []
    sides = [s for s in (bd.negative, bd.positive) if s is not None]
    if not sides:
        return [f"The model still produces language at every norm of the grid ({bd.rule})."]
    return [f"Where the model breaks: {s.text[0].upper() + s.text[1:]}; the fits leave out "
            f"r = {s.norm:.4g} and beyond." for s in sides] + [f"Criterion: {bd.rule}."]
