"""Turn the paper authors' curve files into a run folder that ``fit_run`` can read.

The authors' helpfulness files (one per MMLU subject, model and steering vector) hold
``p_mean``, ``p_std``, ``p_mean_relative`` and ``p_std_relative`` keyed by the coefficient
(as a string, ``"-10.0"`` ... ``"10.0"``), over 100 questions per point. ``p_mean`` is the
probability of the correct answer letter over the full vocabulary (it falls towards 0 at
large ``|r|``) and ``p_mean_relative`` the probability renormalised over the four options
(it falls towards 0.25), so they become the ``helpfulness_vocab`` and ``helpfulness``
metrics. The behavior files hold ``behavior_<x>_mean`` and ``behavior_<x>_std`` over 100
prompts (``harmful``) or 16 (``bias``) and become an ``alignment`` task named ``<x>``.
Standard errors are ``std/sqrt(n)``.

File names follow ``<subject>_<model>_<vector>.json`` and
``behavior_<x>_<model>_<vector>.json``; the model is the first ``_``-separated part that
starts with a capital letter (``Llama-2-13b-chat``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repe_tradeoff.runs import write_config, write_jsonl
from repe_tradeoff.theory.errors import TheoryError

#: Prompts behind each point of the authors' behavior curves.
PAPER_BEHAVIOR_PROMPTS = {"harmful": 100, "bias": 16}
PAPER_QUESTIONS = 100
PAPER_CHOICES = 4


def split_paper_name(stem: str) -> tuple[str, str | None, str | None]:
    """``(task, model, vector)`` from a paper-curve file name without extension."""
    parts = stem.split("_")
    for i, p in enumerate(parts):
        if i > 0 and p[:1].isupper():
            return "_".join(parts[:i]), p, "_".join(parts[i + 1 :]) or None
    return stem, None, None


def _load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TheoryError(f"{path} not found")
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise TheoryError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise TheoryError(f"{path}: expected a JSON object of curves")
    return data


def _curve(data: dict, key: str, path: Path) -> dict[float, float]:
    if key not in data or not isinstance(data[key], dict):
        raise TheoryError(f"{path}: no `{key}` curve (keys: {', '.join(sorted(data))})")
    try:
        return {float(k): float(v) for k, v in data[key].items()}
    except (TypeError, ValueError):
        raise TheoryError(f"{path}: `{key}` must map coefficients to numbers") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _rows(task, kind, metric, means, stds, n):
    rows = []
    for r in sorted(means):
        se = None
        if stds is not None and r in stds:
            se = stds[r] / math.sqrt(n)
        rows.append(
            {"task": task, "kind": kind, "metric": metric, "norm": r, "mean": means[r],
             "stderr": se, "n": n}
        )
    return rows


def import_paper_curves(
    helpfulness_json: Path | Sequence[Path],
    behavior_json: Path,
    out_dir: Path,
    *,
    n_questions: int = PAPER_QUESTIONS,
    n_prompts: int | None = None,
    choices: int = PAPER_CHOICES,
    overwrite: bool = False,
    command: str | None = None,
) -> Path:
    """Write a run folder (``points.jsonl`` and ``config.json``) from the authors' curves.

    ``helpfulness_json`` is one helpfulness file or several (one task each, named after
    the subject); ``behavior_json`` one behavior file. ``n_prompts`` defaults to 100 for
    ``harmful`` and 16 for ``bias``. The source files are read, not copied; ``config.json``
    records their names and SHA-256. Returns ``out_dir``. Refuses to replace an existing
    ``points.jsonl`` unless ``overwrite``. ``command``: the command line that made the
    folder, recorded in ``config.json`` for the report.
    """
    help_paths = [Path(helpfulness_json)] if isinstance(helpfulness_json, (str, Path)) else [
        Path(p) for p in helpfulness_json
    ]
    if not help_paths:
        raise TheoryError("give at least one helpfulness curve file")
    behavior_json = Path(behavior_json)
    out_dir = Path(out_dir)
    if (out_dir / "points.jsonl").exists() and not overwrite:
        raise TheoryError(
            f"{out_dir / 'points.jsonl'} already exists: choose an empty folder or overwrite it"
        )
    rows: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    models: set[str] = set()
    vectors: set[str] = set()
    sources = []

    bdata = _load(behavior_json)
    keys = [k for k in bdata if re.fullmatch(r"behavior_(.+)_mean", k)]
    if len(keys) != 1:
        raise TheoryError(
            f"{behavior_json}: expected one `behavior_<x>_mean` curve, found {len(keys)}"
        )
    behavior = re.fullmatch(r"behavior_(.+)_mean", keys[0]).group(1)
    n_b = n_prompts if n_prompts is not None else PAPER_BEHAVIOR_PROMPTS.get(behavior)
    if n_b is None:
        raise TheoryError(
            f"{behavior_json}: unknown behavior {behavior!r}; pass n_prompts (prompts per point)"
        )
    bmean = _curve(bdata, keys[0], behavior_json)
    bstd = _curve(bdata, f"behavior_{behavior}_std", behavior_json) if (
        f"behavior_{behavior}_std" in bdata
    ) else None
    rows += _rows(behavior, "alignment", "alignment", bmean, bstd, n_b)
    tasks.append({"name": behavior, "kind": "alignment", "scorer": "paper", "n_items": n_b})
    _, bmodel, bvector = split_paper_name(behavior_json.stem.removeprefix("behavior_"))
    for x, s in ((bmodel, models), (bvector, vectors)):
        if x:
            s.add(x)
    sources.append({"name": behavior_json.name, "sha256": _sha256(behavior_json)})

    seen: set[str] = set()
    for path in help_paths:
        data = _load(path)
        task, model, vector = split_paper_name(path.stem)
        if task in seen:
            raise TheoryError(f"{path}: a second file for task {task!r}")
        if task == behavior:
            task = f"{task}-helpfulness"
        seen.add(task)
        if model:
            models.add(model)
        if vector:
            vectors.add(vector)
        rel = _curve(data, "p_mean_relative", path)
        rel_std = _curve(data, "p_std_relative", path) if "p_std_relative" in data else None
        rows += _rows(task, "helpfulness", "helpfulness", rel, rel_std, n_questions)
        if "p_mean" in data:
            voc = _curve(data, "p_mean", path)
            voc_std = _curve(data, "p_std", path) if "p_std" in data else None
            rows += _rows(task, "helpfulness", "helpfulness_vocab", voc, voc_std, n_questions)
        tasks.append(
            {"name": task, "kind": "helpfulness", "format": "letter", "n_choices": int(choices),
             "n_items": n_questions}
        )
        sources.append({"name": path.name, "sha256": _sha256(path)})

    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": 1,
        "model": ", ".join(sorted(models)) or None,
        "vector": {"behavior": ", ".join(sorted(vectors)) or None},
        "norms": sorted({row["norm"] for row in rows}),
        "tasks": tasks,
        "source": {
            "kind": "paper-curves",
            "reference": "Wolf et al., arXiv 2401.16332",
            "files": sources,
            "note": "norms are the authors' steering coefficients",
        },
    }
    if len(models) > 1 or len(vectors) > 1:
        config["source"]["mismatch"] = (
            "the files come from different models or vectors: "
            f"models {sorted(models)}, vectors {sorted(vectors)}"
        )
    if command:
        config["command"] = command
    write_jsonl(out_dir / "points.jsonl", rows)
    write_config(out_dir, config)
    return out_dir
