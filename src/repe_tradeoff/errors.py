"""The errors a user can cause (and fix); the CLI prints them as messages, not tracebacks."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    from repe_tradeoff.config import ConfigError
    from repe_tradeoff.data import DatasetError
    from repe_tradeoff.metrics import MetricError
    from repe_tradeoff.models import ModelError
    from repe_tradeoff.reading import ReadingError
    from repe_tradeoff.report import ReportError
    from repe_tradeoff.steering import SteeringError
    from repe_tradeoff.sweep import SweepError
    from repe_tradeoff.theory import TheoryError
    from repe_tradeoff.vectors import VectorError

    # ValueError last: parse errors of layer specs and norm grids are plain ValueErrors.
    return (ConfigError, DatasetError, MetricError, ModelError, ReadingError, ReportError, SteeringError,
            SweepError, TheoryError, VectorError, FileNotFoundError, ValueError)
