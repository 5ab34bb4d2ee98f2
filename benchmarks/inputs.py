"""What every method scores: the model, a steering vector, a norm grid and cloze sequences."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path


@dataclasses.dataclass
class Bench:
    model: object
    tokenizer: object
    task: object  # MultipleChoiceTask (cloze)
    seqs: object  # its TaskSequences
    vector: object  # SteeringVector over `layers`
    vector_all: object  # directions at every layer
    layers: list[int]
    norms: list[float]
    scale: float  # mean residual norm of the steered blocks
    n_layers: int


def _vector_cache_path(model_dir: str, pairs) -> Path:
    key = hashlib.sha256(json.dumps([model_dir, [list(p) for p in pairs]]).encode()).hexdigest()
    return Path(tempfile.gettempdir()) / f"repe-bench-vector-{key[:16]}.safetensors"


def load_vector(model, tokenizer, n_layers: int):
    """The pca vector of the built-in harmfulness pairs at every layer (cached in the temp folder).

    Each layer's direction is fitted independently, so any subset of its layers is exactly what
    ``extract`` on that subset alone returns.
    """
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models.loading import default_model_dir
    from repe_tradeoff.vectors.reading import extract
    from repe_tradeoff.vectors.vector import SteeringVector

    pairs = [(p.aligned, p.misaligned) for p in load_behavior("harmfulness").pairs]
    path = _vector_cache_path(str(default_model_dir()), pairs)
    if path.exists():
        try:
            return SteeringVector.load(path)
        except Exception:  # noqa: BLE001  (a stale cache file is simply recomputed)
            path.unlink(missing_ok=True)
    vector, _ = extract(model, tokenizer, pairs, list(range(n_layers)), method="pca")
    vector.save(path)
    return vector


def setup(questions: int, n_norms: int, span: float, layers: str = "middle") -> Bench:
    """The embedded model's benchmark inputs."""
    from repe_tradeoff.models.loading import load_model, n_layers

    model, tokenizer = load_model("default")
    vector_all = load_vector(model, tokenizer, n_layers(model))
    return bench_from(model, tokenizer, vector_all, questions, n_norms, span, layers)


def restrict(vector_all, layers: list[int]):
    """``vector_all`` on ``layers`` only, its metadata narrowed to them."""
    from repe_tradeoff.vectors.vector import SteeringVector

    meta = dict(vector_all.metadata)
    meta["residual_norms"] = {str(l): vector_all.metadata["residual_norms"][str(l)] for l in layers}
    meta["layers"] = list(layers)
    return SteeringVector({l: vector_all[l] for l in layers}, meta)


def bench_from(model, tokenizer, vector_all, questions: int, n_norms: int, span: float,
               layers: str = "middle") -> Bench:
    """Inputs for any model: ``vector_all`` steered on ``layers`` (a spec such as ``middle`` or
    ``8-15``), the grid ±``span`` × their mean residual norm, the first ``questions`` of basic-qa."""
    from repe_tradeoff.models.loading import n_layers, parse_layers

    n = n_layers(model)
    chosen = parse_layers(layers, n)
    vector = restrict(vector_all, chosen)
    residual = [vector.metadata["residual_norms"][str(l)] for l in chosen]
    scale = sum(residual) / len(residual)
    task = cloze_task(questions)
    return Bench(model, tokenizer, task, task.sequences(tokenizer), vector, vector_all, chosen,
                 norm_grid(n_norms, span * scale), scale, n)


def cloze_task(questions: int):
    """The first ``questions`` basic-qa questions as cloze (4 options each)."""
    from repe_tradeoff.data import load_helpfulness
    from repe_tradeoff.tasks.choice import MultipleChoiceTask

    source = load_helpfulness("basic-qa")
    return MultipleChoiceTask(source.name, list(source.questions)[:questions], "cloze", "plain")


def subset(b: Bench, questions: int) -> Bench:
    """The same inputs on the first ``questions`` questions."""
    task = cloze_task(questions)
    return dataclasses.replace(b, task=task, seqs=task.sequences(b.tokenizer))


def norm_grid(count: int, radius: float) -> list[float]:
    """``count`` evenly spaced norms in [-radius, radius] (0 included when count is odd)."""
    if count == 1:
        return [round(radius, 6)]
    grid = [round(-radius + 2 * radius * i / (count - 1), 6) + 0.0 for i in range(count)]
    if count % 2:
        grid[count // 2] = 0.0
    return grid


def real_tokens(b: Bench, n_norms: int | None = None) -> int:
    """Sum of the sequence lengths × norms: the same tokens/s numerator for every method."""
    per_norm = sum(len(p) + len(c) for p, c in zip(b.seqs.prompts, b.seqs.continuations))
    return per_norm * (len(b.norms) if n_norms is None else n_norms)
