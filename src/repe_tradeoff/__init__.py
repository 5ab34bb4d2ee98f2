"""Measure, explain and predict the alignment-helpfulness tradeoff of steering.

The public API (``import repe_tradeoff as rt``)::

    model, tokenizer = rt.load_model("default")
    vector = rt.extract(model, tokenizer, "harmfulness", layers="middle", method="pca")
    run = rt.sweep(model, tokenizer, vector, norms="auto", alignment="harmfulness",
                   helpfulness="basic-qa", limit=48, out="runs/h")
    result = rt.fit(run)            # result.recommendation.norm, .text, …
    run.points()                    # a pandas DataFrame
    rt.report(run)                  # the path of report.html
    with rt.steer(model, vector, norm=3.0): ...

Names are imported on first use, so ``import repe_tradeoff`` stays cheap (no torch).
"""

from __future__ import annotations

import importlib

from repe_tradeoff._version import __version__
from repe_tradeoff.errors import RepeTradeoffError

_EXPORTS = {
    "load_model": "repe_tradeoff.api",
    "extract": "repe_tradeoff.api",
    "sweep": "repe_tradeoff.api",
    "fit": "repe_tradeoff.api",
    "predict": "repe_tradeoff.api",
    "report": "repe_tradeoff.api",
    "Run": "repe_tradeoff.api",
    "FitResult": "repe_tradeoff.api",
    "steer": "repe_tradeoff.engine.steering",
    "SteeringVector": "repe_tradeoff.vectors.vector",
    "load_behavior": "repe_tradeoff.data.behaviors",
    "load_helpfulness": "repe_tradeoff.data.helpfulness",
}

__all__ = ["RepeTradeoffError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'repe_tradeoff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
