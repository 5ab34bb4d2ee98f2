"""The metrics a run records: one registry of names, kinds, ranges and chance levels."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A per-item value the sweep records. ``chance``: ``"1/k"`` (a probability over the k
    options, chance ``1/k``), ``"0"`` (a probability over the vocabulary) or None (not a
    probability). ``also``: other kinds of task that record it."""

    name: str
    kind: str
    chance: str | None
    also: tuple[str, ...] = ()


#: Every metric of ``items.jsonl``/``points.jsonl``, in the order points are written.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("alignment", "alignment", None),
        Metric("helpfulness", "helpfulness", "1/k"),
        Metric("helpfulness_norm", "helpfulness", "1/k"),
        Metric("helpfulness_vocab", "helpfulness", "0"),
        Metric("accuracy", "helpfulness", "1/k"),
        Metric("accuracy_norm", "helpfulness", "1/k"),  # lm-eval's acc_norm (lm-eval tasks only)
        Metric("logit_shift", "helpfulness", None),
        Metric("response_logprob", "alignment", None),
        Metric("exact_match", "helpfulness", "0"),
        Metric("kl", "fluency", None),
        Metric("perplexity", "fluency", None),
        Metric("generated_tokens", "helpfulness", None, also=("alignment", "fluency")),
    )
}


KINDS = ("alignment", "helpfulness", "fluency")


#: The number of options assumed when neither config.json, the caller nor the items give it.
DEFAULT_CHOICES = 4


def metrics_of(kind: str) -> list[str]:
    return [m.name for m in METRICS.values() if m.kind == kind or kind in m.also]


def chance_level(metric: str, k: int | None) -> float | None:
    """The value a metric takes when the model cannot tell the options apart."""
    rule = METRICS[metric].chance
    if rule == "1/k":
        return None if not k else 1.0 / k
    return 0.0 if rule == "0" else None
