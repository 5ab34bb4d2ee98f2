"""The paper's theory on run files: fits, assumption checks, prediction, efficient regime.

Works on the files of a run folder only (``docs/run-files.md``); it needs numpy and scipy,
never a model. The entry points are :func:`fit_run` (writes ``fits.json``) and
:func:`import_paper_curves` (turns the paper authors' curves into a run folder).
"""

from .errors import TheoryError
from .laws import evaluate, get_law
from .paper import import_paper_curves
from .pipeline import (
    CHANCE_DELTA,
    DEFAULT_WINDOW,
    FORMAT_VERSION,
    fit_run,
)

__all__ = [
    "CHANCE_DELTA",
    "DEFAULT_WINDOW",
    "FORMAT_VERSION",
    "TheoryError",
    "evaluate",
    "fit_run",
    "get_law",
    "import_paper_curves",
]
