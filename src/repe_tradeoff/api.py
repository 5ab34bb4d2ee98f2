"""The Python API: the CLI's stages as plain functions, for notebooks and scripts.

>>> import repe_tradeoff as rt
>>> model, tokenizer = rt.load_model("default")
>>> vector = rt.extract(model, tokenizer, "harmfulness", layers="middle")
>>> run = rt.sweep(model, tokenizer, vector, alignment="harmfulness", helpfulness="basic-qa",
...                limit=48, out="runs/h")
>>> rt.fit(run).recommendation.norm

Each function takes what the matching command takes, as keywords with the same names, and
writes the same run files, so a run made here can be fitted or reported from the command line
and the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from repe_tradeoff.errors import RepeTradeoffError

DEFAULT_BUDGET = 0.05


@dataclass(frozen=True)
class Run:
    """A run folder: what `sweep` or `predict` wrote, and what `fit` and `report` read."""

    path: Path

    def points(self):
        """``points.jsonl`` as a pandas DataFrame: one row per task × metric × norm."""
        import pandas as pd

        from repe_tradeoff.runs import read_jsonl

        return pd.DataFrame(read_jsonl(self.path / "points.jsonl"))

    def items(self):
        """``items.jsonl`` as a pandas DataFrame: one row per task × item × norm."""
        import pandas as pd

        from repe_tradeoff.runs import read_item_rows

        return pd.DataFrame(read_item_rows(self.path))

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class FitResult:
    """What `fit` found: ``fits.json`` as typed data (:class:`~repe_tradeoff.runs.schema.FitsFile`).

    ``recommendation`` is the budgeted answer: ``.norm``, ``.alignment_gain`` and
    ``.helpfulness_change`` with their 95 % intervals, ``.conservative``, and ``.text``."""

    run: Run
    fits: object

    @property
    def recommendation(self):
        return self.fits.recommendation


def _run_path(run: Run | str | Path) -> Path:
    path = Path(run.path if isinstance(run, Run) else run)
    if not path.is_dir():
        raise RepeTradeoffError(f"{path} is not a run folder: give the folder `sweep` wrote (its --out)")
    return path


def load_model(spec: str = "default", *, dtype: str = "float32", device: str | None = None,
               trust_remote_code: bool = False):
    """A causal LM and its tokenizer: ``default`` (embedded), a hub id, a local folder or a .gguf file.

    The result unpacks as ``model, tokenizer`` and also carries ``.name`` and ``.revision``."""
    from repe_tradeoff.models.loading import load_model as load

    return load(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code)


def _pairs(behavior) -> tuple[list[tuple[str, str]], str]:
    from repe_tradeoff.data import load_behavior

    if isinstance(behavior, (str, Path)):
        data = load_behavior(behavior)
        if not data.pairs:
            raise RepeTradeoffError(f"behavior {behavior!r} has no contrastive pairs to read a direction from")
        return [(p.aligned, p.misaligned) for p in data.pairs], data.name
    pairs = [tuple(p) for p in behavior]
    if not all(len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs):
        raise RepeTradeoffError("behavior: give a name, a path, or (aligned, misaligned) pairs of strings")
    return pairs, "pairs"


def extract(model, tokenizer, behavior, *, layers: str | Sequence[int] = "middle", method: str = "pca",
            position: str = "last", batch_size: int = 16):
    """Read a steering vector from a behavior's contrastive pairs (a name, a path, or pairs)."""
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.vectors.reading import extract as read

    pairs, name = _pairs(behavior)
    chosen = parse_layers(layers if isinstance(layers, str) else list(layers), n_layers(model))
    vector, _ = read(model, tokenizer, pairs, chosen, method=method, position=position, batch_size=batch_size,
                     metadata={"model": getattr(model.config, "_name_or_path", ""), "dataset": name})
    return vector


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def _settings(*, norms, points, norm_unit, alignment, helpfulness, fluency, limit, scorer, fmt, extra):
    from pydantic import ValidationError

    from repe_tradeoff.workflows.settings import (
        BehaviorSpec,
        ConfigError,
        HelpfulnessSpec,
        SweepSettings,
    )

    try:
        return SweepSettings(
            norms=norms, points=points, norm_unit=norm_unit, limit=limit,
            behaviors=[BehaviorSpec(name=a, scorer=scorer) for a in _as_list(alignment)],
            helpfulness=[HelpfulnessSpec(spec=h, format=fmt) for h in _as_list(helpfulness)],
            fluency=_as_list(fluency), **extra)
    except ValidationError as err:
        raise ConfigError(str(err)) from None


def _loaded(model, tokenizer):
    """A model and tokenizer given separately, as the workflows take them (named after the model)."""
    from repe_tradeoff.models.loading import LoadedModel

    return LoadedModel(model, tokenizer, getattr(model.config, "_name_or_path", "") or type(model).__name__)


def _steered(model, vector, layers) -> tuple:
    """The vector (an object or any file `--vector` reads) at the chosen layers (default: its own), checked
    against the model, and those layers."""
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.vectors.vector import SteeringVector

    vec = vector if isinstance(vector, SteeringVector) else SteeringVector.load(vector)
    vec.check_model(model)
    spec = layers if layers is None or isinstance(layers, (str, int)) else list(layers)
    chosen = parse_layers(spec, n_layers(model)) if spec is not None else vec.layers
    return vec.select(chosen), chosen


def sweep(model, tokenizer, vector, *, out: str | Path, norms: str | Sequence[float] = "auto", points: int | None = None,
          max_helpfulness_loss: float | str = DEFAULT_BUDGET, norm_unit: str = "absolute", alignment=(),
          helpfulness=(), fluency=(), layers=None, limit: int | None = None, scorer: str = "forced-choice",
          format: str = "cloze", **options) -> Run:
    """Measure alignment and helpfulness into the run folder ``out``.

    ``norms="auto"`` measures by the sequential plan where P(correct) has lost
    ``max_helpfulness_loss`` (``points=N`` places N norms densely instead); a grid is swept as given.
    The keywords are the `sweep` command's options (``batch_size``, ``chunk_size``, ``positions``, …
    go through ``options``); a folder that holds the same sweep is resumed."""
    from repe_tradeoff.workflows.prepare import build_tasks, prepare_sweep
    from repe_tradeoff.workflows.sweep import run_sweep

    settings = _settings(norms=norms, points=points, norm_unit=norm_unit, alignment=alignment,
                         helpfulness=helpfulness, fluency=fluency, limit=limit, scorer=scorer, fmt=format,
                         extra=options)
    if not (settings.behaviors or settings.helpfulness or settings.fluency):
        raise RepeTradeoffError("nothing to measure: give alignment=, helpfulness= and/or fluency=")
    tasks = build_tasks(settings)
    vec, chosen = _steered(model, vector, layers)
    lm = _loaded(model, tokenizer)
    out = Path(out)
    plan, config = prepare_sweep(lm, settings, vec, chosen, model_name=lm.name, command=None, tasks=tasks, out=out,
                                 budget=str(max_helpfulness_loss))
    run_sweep(model, tokenizer, vec, plan, out, config=config, limit=limit)
    return Run(out)


def fit(run: Run | str | Path, *, max_helpfulness_loss: float | str = DEFAULT_BUDGET, **options) -> FitResult:
    """Fit the paper's laws to a run, check its assumptions and recommend a norm within the budget.

    Writes ``fits.json`` into the run folder; ``options`` are the `fit` command's (``choices``,
    ``window``, ``lam``, ``n_boot``, …)."""
    from repe_tradeoff.runs import read_fits
    from repe_tradeoff.theory.io.fits import fit_run

    path = _run_path(run)
    fit_run(path, max_helpfulness_loss=max_helpfulness_loss, **options)
    return FitResult(Run(path), read_fits(path))


def report(run: Run | str | Path) -> Path:
    """Write the run's plots, ``report.html`` and ``summary.md``; returns the path of ``report.html``."""
    from repe_tradeoff.reporting import build_report

    return build_report(_run_path(run))


def predict(model, tokenizer, vector, *, out: str | Path, norms: str | Sequence[float], probe: float | None = None,
            norm_unit: str = "absolute", alignment=(), helpfulness=(), layers=None, limit: int | None = None,
            scorer: str = "forced-choice", format: str = "cloze", n_boot: int = 200) -> Run:
    """Measure only the probe norms 0, ±h, ±2h and predict the curves over ``norms`` (prediction.md)."""
    from repe_tradeoff.workflows.predict import run_predict
    from repe_tradeoff.workflows.prepare import build_tasks

    settings = _settings(norms=norms, points=None, norm_unit=norm_unit, alignment=alignment, helpfulness=helpfulness,
                         fluency=(), limit=limit, scorer=scorer, fmt=format, extra={})
    tasks = build_tasks(settings)
    vec, chosen = _steered(model, vector, layers)
    lm = _loaded(model, tokenizer)
    run_predict(lm, settings, vec, chosen, Path(out), probe=probe, model_name=lm.name,
                tasks=tasks, n_boot=n_boot)
    return Run(Path(out))
