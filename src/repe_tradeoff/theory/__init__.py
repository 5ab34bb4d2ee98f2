"""The paper's theory on run files: fits, assumption checks, prediction, efficient regime.

Works on the files of a run folder only (``docs/run-files.md``); it needs numpy and scipy,
never a model. The entry points are :func:`fit_run` (writes ``fits.json``),
:func:`import_paper_curves` (turns the paper authors' curves into a run folder) and the
response (:func:`helpfulness_response`, :func:`predict_helpfulness`, :func:`decompose`,
:func:`validate`; per-quantity curves :class:`ResponseCurve`), which predicts a sweep from its
probe norms.
"""

from repe_tradeoff.theory.errors import TheoryError
from repe_tradeoff.theory.io.fits import (
    CHANCE_DELTA,
    DEFAULT_WINDOW,
    FORMAT_VERSION,
    fit_run,
)
from repe_tradeoff.theory.io.paper import import_paper_curves
from repe_tradeoff.theory.laws.forms import evaluate, get_law
from repe_tradeoff.theory.response.model import ResponseCurve, fit_curve
from repe_tradeoff.theory.response.prediction import (
    AlignmentResponse,
    HelpfulnessResponse,
    Prediction,
    Probe,
    alignment_response,
    find_probe,
    helpfulness_response,
    predict_alignment,
    predict_helpfulness,
    task_kinds,
    trust_radius,
)
from repe_tradeoff.theory.response.summary import (
    Decomposition,
    Validation,
    decompose,
    predicted_points,
    validate,
)

__all__ = [
    "CHANCE_DELTA",
    "DEFAULT_WINDOW",
    "FORMAT_VERSION",
    "AlignmentResponse",
    "Decomposition",
    "HelpfulnessResponse",
    "Prediction",
    "Probe",
    "ResponseCurve",
    "TheoryError",
    "Validation",
    "alignment_response",
    "decompose",
    "evaluate",
    "find_probe",
    "fit_curve",
    "fit_run",
    "get_law",
    "helpfulness_response",
    "import_paper_curves",
    "predict_alignment",
    "predict_helpfulness",
    "predicted_points",
    "task_kinds",
    "trust_radius",
    "validate",
]
