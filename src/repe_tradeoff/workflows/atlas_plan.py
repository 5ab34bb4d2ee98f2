"""How much the atlas measures: its probe items, its bands, and how it confirms the best entries.

The atlas ranks entries by a prediction from the probe (the second-order response at ``0, ±h``),
read far outside the probe (the budget is reached some 30–40 probe steps out). So its default
spends little on the screen and more on measuring the few entries a decision rests on:

1. **Screen**: every single layer, and bands of the given widths starting every ``band_stride``
   layers (plus the topmost band), probed on the first ``probe_items`` items of each task kind.
2. **Confirm**: the ``confirm`` best entries by predicted gain are swept on ``confirm_items`` items
   at the norms a *confirmation plan* chooses; the recommendation is the confirmed entry with
   the most *measured* alignment gained within the budget.

``exhaustive()`` is the full map: every band at every layer on every item, the best entries
swept on the automatic grid (the atlas as it was before these defaults).

The confirmation plan is the seam for other ways of placing a confirming sweep's norms: a plan
maps an entry (its row of ``atlas.json``) to the ``norms`` setting of its sweep — an explicit
list, or a grid name the sweep understands (``auto``; the sequential plan's name, once the
sweep has one). Register it in :data:`CONFIRM_PLANS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from repe_tradeoff.errors import RepeTradeoffError

#: Alignment and helpfulness items of the screen. Fewer alignment prompts change the answer:
#: with 8 (and 24 questions) the screen ranked early single layers first on the embedded model
#: (benchmarks/RESULTS-atlas-fast.md); halving the questions lost the best band from the top 3.
DEFAULT_PROBE_ITEMS = {"alignment": 16, "helpfulness": 32}
DEFAULT_BAND_STRIDE = 2
DEFAULT_CONFIRM = 3
DEFAULT_CONFIRM_ITEMS = 32
#: Where the bracket plan measures, as fractions of the predicted norm at the budget (the
#: prediction ran up to 2× too far on the embedded model: benchmarks/RESULTS.md, the layer atlas).
BRACKET_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.25)

ConfirmPlan = Callable[[Mapping], "str | list[float]"]


class AtlasPlanError(RepeTradeoffError):
    """Atlas measurement settings that cannot be used; the message says what to give instead."""


def bracket_norms(row: Mapping) -> list[float]:
    """0 and the probe's ±h (for the measured slope), then norms on the aligned side around the
    predicted norm at the budget (or, when the probe predicts no crossing, up to 64 h)."""
    h = float(row["probe_h"])
    predicted = (row.get("norm_at_budget") or {}).get("value")
    top = float(predicted) if predicted else 64 * h
    return sorted({0.0, h, -h, *(round(f * top, 6) for f in BRACKET_FRACTIONS)})


def auto_norms(row: Mapping) -> str:
    """The sweep's automatic grid (search, then its default number of norms)."""
    return "auto"


#: Confirmation plans by name (``--confirm-plan``).
CONFIRM_PLANS: dict[str, ConfirmPlan] = {"bracket": bracket_norms, "auto": auto_norms}


@dataclass(frozen=True)
class AtlasPlan:
    """What the atlas measures. ``None`` items mean every item of the task."""

    band_stride: int = DEFAULT_BAND_STRIDE
    probe_items: Mapping[str, int | None] = field(default_factory=lambda: dict(DEFAULT_PROBE_ITEMS))
    confirm: int = DEFAULT_CONFIRM
    confirm_items: int | None = DEFAULT_CONFIRM_ITEMS
    confirm_plan: str = "bracket"

    def __post_init__(self):
        if self.band_stride < 1:
            raise AtlasPlanError(f"--band-stride {self.band_stride}: give 1 (every band) or more")
        if self.confirm < 0:
            raise AtlasPlanError(f"--confirm {self.confirm}: give how many of the best entries to sweep (0 for none)")
        if self.confirm_plan not in CONFIRM_PLANS:
            raise AtlasPlanError(f"--confirm-plan {self.confirm_plan!r} is not one of {', '.join(CONFIRM_PLANS)}")
        for kind, n in {**self.probe_items, "confirm": self.confirm_items}.items():
            if n is not None and n < 2:
                raise AtlasPlanError(f"{kind} items {n}: the bootstrap needs two or more items (or all)")

    def limit_for(self, kind: str) -> int | None:
        return self.probe_items.get(kind)

    def norms_for(self, row: Mapping) -> str | list[float]:
        return CONFIRM_PLANS[self.confirm_plan](row)

    def with_limit(self, limit: int | None) -> AtlasPlan:
        """``--limit N``: at most N items of every task, in the screen and the confirmation."""
        if limit is None:
            return self
        return replace(self, probe_items={k: _cap(v, limit) for k, v in
                                          {**DEFAULT_PROBE_ITEMS, **self.probe_items}.items()},
                       confirm_items=_cap(self.confirm_items, limit))


def _cap(n: int | None, limit: int) -> int:
    return limit if n is None else min(n, limit)


def exhaustive(confirm: int = DEFAULT_CONFIRM) -> AtlasPlan:
    """Every band at every layer, every item, and the best entries swept on the automatic grid."""
    return AtlasPlan(band_stride=1, probe_items={"alignment": None, "helpfulness": None}, confirm=confirm,
                     confirm_items=None, confirm_plan="auto")


def parse_items(spec: str, option: str) -> int | None:
    """``32`` or ``all``."""
    text = spec.strip().lower()
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise AtlasPlanError(f"{option} {spec!r}: give a whole number of items or all") from None


def parse_probe_items(spec: str) -> dict[str, int | None]:
    """``16,32`` (alignment, helpfulness), one number for both, or ``all``."""
    parts = [p for p in spec.split(",") if p.strip()]
    if len(parts) not in (1, 2):
        raise AtlasPlanError(f"--probe-items {spec!r}: give ALIGNMENT,HELPFULNESS item counts, e.g. 16,32, or all")
    try:
        values = [parse_items(p, "--probe-items") for p in parts]
    except AtlasPlanError:
        raise AtlasPlanError(f"--probe-items {spec!r}: give a whole number of items or all for each of "
                             "ALIGNMENT,HELPFULNESS, e.g. 16,32") from None
    return {"alignment": values[0], "helpfulness": values[-1]}


def band_starts(layers: Sequence[int], width: int, stride: int) -> list[int]:
    """Lowest layers of the bands of ``width`` inside ``layers``: every layer for single layers;
    for wider bands every ``stride``-th fitting start of each contiguous run, and its topmost one."""
    have = set(layers)
    fits = [s for s in sorted(have) if all(s + i in have for i in range(width))]
    if width == 1 or stride == 1:
        return fits
    chosen, run_start = [], None
    for k, s in enumerate(fits):
        if k == 0 or s != fits[k - 1] + 1:
            run_start = s
        last_of_run = k == len(fits) - 1 or fits[k + 1] != s + 1
        if (s - run_start) % stride == 0 or last_of_run:
            chosen.append(s)
    return chosen
