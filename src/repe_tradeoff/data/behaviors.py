"""Behaviors: the built-in contrastive pairs and evaluation items, and local copies of public
behavior datasets (AdvBench, the RepE harmful/harmless set, StereoSet).

Every loader reads a local file or folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from repe_tradeoff.data.schemas import Behavior, BehaviorItem, ContrastivePair, DatasetError
from repe_tradeoff.data.tables import (
    Collector,
    decode,
    iter_csv,
    iter_jsonl,
    load_builtin,
    load_table,
    read_bytes,
    require_columns,
    row_cells,
    validate,
)

__all__ = [
    "BUILTIN_BEHAVIORS",
    "REFUSALS",
    "load_advbench",
    "load_behavior",
    "load_repe_harmful_harmless",
    "load_stereoset",
]

#: Built-in behaviors: name -> (pairs file, eval file) in ``repe_tradeoff/data/builtin``.
BUILTIN_BEHAVIORS: dict[str, tuple[str, str]] = {
    "harmfulness": ("harmfulness_pairs.jsonl", "harmfulness_eval.jsonl"),
    "sentiment": ("sentiment_pairs.jsonl", "sentiment_eval.jsonl"),
    "fairness": ("fairness_pairs.jsonl", "fairness_eval.jsonl"),
}

#: Refusals paired with AdvBench goals; goal ``g`` gets
#: ``REFUSALS[int(sha256(g), 16) % len(REFUSALS)]``, independent of row order.
REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request.",
    "I won't help with this, as it could cause harm.",
    "Sorry, I can't provide that.",
    "I'm not able to help with that request.",
    "I must decline; I can't help with something that could hurt people.",
    "No, I can't do that, but I'm happy to help with something else.",
    "I'm afraid I can't help with that.",
)


def load_behavior(name_or_path: str | Path, *, name: str | None = None) -> Behavior:
    """Load a behavior: its contrastive pairs and/or its evaluation items.

    ``name_or_path`` is one of

    * a built-in name: ``harmfulness`` (refusal vs compliance), ``sentiment``
      (positive vs negative) or ``fairness`` (declining vs endorsing a stereotype);
    * a folder holding ``pairs.jsonl`` (:class:`ContrastivePair`) and/or ``eval.jsonl``
      (:class:`BehaviorItem`), or the same as ``.csv``; either may be missing, not both;
    * a single JSONL/CSV file of contrastive pairs;
    * ``advbench:PATH`` (:func:`load_advbench`, items only),
      ``repe-harmful:PATH`` (:func:`load_repe_harmful_harmless`, pairs only) or
      ``stereoset:PATH`` (:func:`load_stereoset`).

    ``name`` overrides the behavior's name (default: the built-in name, the folder or
    file stem, or the prefix).
    """
    spec = str(name_or_path)
    if isinstance(name_or_path, str) and spec in BUILTIN_BEHAVIORS:
        pairs_file, eval_file = BUILTIN_BEHAVIORS[spec]
        return Behavior(
            name=name or spec,
            pairs=load_builtin(pairs_file, ContrastivePair),
            items=load_builtin(eval_file, BehaviorItem),
            source=f"builtin:{spec}",
        )
    prefix, sep, rest = spec.partition(":")
    if isinstance(name_or_path, str) and sep and prefix in _BEHAVIOR_PREFIXES:
        if not rest:
            raise DatasetError(
                f"behavior spec {spec!r} has no path", hint=f"Write '{prefix}:/path/to/file'."
            )
        behavior = _BEHAVIOR_PREFIXES[prefix](Path(rest))
        return behavior.model_copy(update={"name": name or behavior.name})
    path = Path(spec)
    if path.is_dir():
        return _load_behavior_folder(path, name)
    if path.is_file():
        return Behavior(
            name=name or path.stem, pairs=load_table(path, ContrastivePair), source=str(path)
        )
    raise DatasetError(
        f"unknown behavior {spec!r}: not a built-in ({', '.join(BUILTIN_BEHAVIORS)}), "
        "not a file or folder",
        hint="Use a built-in name, a folder with pairs.jsonl/eval.jsonl, a pairs file, or "
        "advbench:PATH, repe-harmful:PATH, stereoset:PATH.",
    )


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in (".jsonl", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _load_behavior_folder(folder: Path, name: str | None) -> Behavior:
    pairs_path, eval_path = _find(folder, "pairs"), _find(folder, "eval")
    if pairs_path is None and eval_path is None:
        raise DatasetError(
            "folder has neither pairs.jsonl nor eval.jsonl (nor .csv)",
            path=folder,
            hint="Put contrastive pairs in pairs.jsonl and/or evaluation items in eval.jsonl.",
        )
    return Behavior(
        name=name or folder.name,
        pairs=load_table(pairs_path, ContrastivePair) if pairs_path else [],
        items=load_table(eval_path, BehaviorItem) if eval_path else [],
        source=str(folder),
    )


def _refusal_for(goal: str) -> str:
    digest = hashlib.sha256(goal.strip().encode("utf-8")).hexdigest()
    return REFUSALS[int(digest, 16) % len(REFUSALS)]


def load_advbench(path: str | Path) -> list[BehaviorItem]:
    """Read an AdvBench-style CSV (columns ``goal``, ``target``) as behavior items.

    ``prompt`` is the goal, ``misaligned`` the target (the compliant opening), and
    ``aligned`` a refusal from :data:`REFUSALS`, chosen by a hash of the goal, so the
    same goal always gets the same refusal.
    """
    path = Path(path)
    columns, rows = iter_csv(path)
    require_columns(path, columns, ("goal", "target"))
    out = Collector(path, False)
    rename = {"prompt": "goal", "misaligned": "target"}
    for rownum, row in rows:
        cells = row_cells(path, rownum, columns, row)
        obj = {
            "prompt": cells["goal"],
            "misaligned": cells["target"],
            "aligned": _refusal_for(cells["goal"]),
        }
        out.add(lambda n=rownum, o=obj: validate(BehaviorItem, o, path=path, row=n, rename=rename))
    return out.finish("row with a goal and a target")


def _json_records(path: Path, split: str | None) -> list[tuple[dict[str, int], Any]]:
    """Rows of a JSON array, a JSON object of splits, or JSONL, with where each came from."""
    text = decode(read_bytes(path), path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DatasetError(f"malformed JSON ({exc})", path=path) from None
        return [({"row": i}, v) for i, v in enumerate(data, start=1)]
    if split is not None:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DatasetError(f"malformed JSON ({exc})", path=path) from None
        if not isinstance(data, dict) or not isinstance(data.get(split), list):
            raise DatasetError(
                f"expected a JSON object with a list under {split!r}",
                path=path,
                field=split,
                hint="Pass the name of a split present in the file, or split=None for JSONL.",
            )
        return [({"row": i}, v) for i, v in enumerate(data[split], start=1)]
    return [({"line": n}, v) for n, v in iter_jsonl(path)]


def load_repe_harmful_harmless(
    path: str | Path, *, template: str | None = None, split: str | None = None
) -> list[ContrastivePair]:
    """Read the harmful/harmless instruction pairs used by RepE as contrastive pairs.

    Layout of ``justinphan3110/harmful_harmless_instructions``: each row has
    ``sentence`` (two instructions) and ``label`` (two booleans, ``True`` = harmless),
    one of each. The file is JSONL, a JSON array of rows, or a JSON object of splits
    (pass ``split``, e.g. ``"train"``).

    The pair is read as a *refusal* direction: ``aligned`` is the harmful instruction
    (the input the aligned model refuses) and ``misaligned`` the harmless one, so adding
    the direction pushes the model towards refusing. ``template`` (for example
    ``"Request: {instruction}\\nResponse:"``) formats each instruction; default: the
    bare instruction.
    """
    path = Path(path)
    out = Collector(path, False)
    for where, value in _json_records(path, split):
        out.add(lambda w=where, v=value: _repe_pair(path, w, v, template))
    return out.finish("row with 'sentence' and 'label'")


def _repe_pair(
    path: Path, where: dict[str, int], value: Any, template: str | None
) -> ContrastivePair:
    def fail(problem: str, field: str | None, hint: str) -> DatasetError:
        return DatasetError(problem, path=path, field=field, hint=hint, **where)

    if not isinstance(value, dict):
        raise fail(
            f"expected a JSON object, got {type(value).__name__}",
            None,
            "Each row needs 'sentence' and 'label'.",
        )
    sentences, labels = value.get("sentence"), value.get("label")
    if not (
        isinstance(sentences, list)
        and len(sentences) == 2
        and all(isinstance(s, str) for s in sentences)
    ):
        raise fail(
            "expected a list of two instructions",
            "sentence",
            "Write 'sentence' as [instruction, instruction].",
        )
    if not (
        isinstance(labels, list)
        and len(labels) == 2
        and all(isinstance(x, (bool, int)) for x in labels)
        and sorted(bool(x) for x in labels) == [False, True]
    ):
        raise fail(
            f"expected one true and one false label, got {labels!r}",
            "label",
            "Write 'label' as two booleans, true for the harmless instruction.",
        )
    harmful = sentences[[bool(x) for x in labels].index(False)]
    harmless = sentences[[bool(x) for x in labels].index(True)]
    if template is not None:
        harmful, harmless = (template.format(instruction=s) for s in (harmful, harmless))
    rename = {"aligned": "sentence", "misaligned": "sentence"}
    return validate(
        ContrastivePair,
        {"aligned": harmful, "misaligned": harmless},
        path=path,
        rename=rename,
        **where,
    )


def load_stereoset(
    path: str | Path, *, bias_types: Iterable[str] | None = None, disjoint: bool = True
) -> Behavior:
    """Read StereoSet intrasentence examples (the official ``dev.json``) as a fairness behavior.

    Each example has a ``context`` with a ``BLANK`` and sentences labelled
    ``stereotype``, ``anti-stereotype`` and ``unrelated``. A pair is (aligned =
    anti-stereotype sentence, misaligned = stereotype sentence); an item has prompt =
    the context (with ``BLANK``) and the same two sentences as responses. With
    ``disjoint`` (default) examples alternate: the 1st, 3rd, ... give pairs and the 2nd,
    4th, ... give items, so the direction is never read from the evaluated sentences.
    ``bias_types`` keeps only those types (gender, profession, race, religion).
    Rows in errors are the 1-based index in ``data.intrasentence``.
    """
    path = Path(path)
    text = decode(read_bytes(path), path)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DatasetError(f"malformed JSON ({exc})", path=path) from None
    examples = data.get("data", {}).get("intrasentence") if isinstance(data, dict) else None
    if not isinstance(examples, list):
        raise DatasetError(
            "no list at data.intrasentence",
            path=path,
            field="data.intrasentence",
            hint="Pass the official StereoSet dev.json (or a file of the same layout).",
        )
    keep = None if bias_types is None else set(bias_types)
    pairs: list[ContrastivePair] = []
    items: list[BehaviorItem] = []
    n_used = 0
    for rownum, example in enumerate(examples, start=1):
        found = _stereoset_example(path, rownum, example)
        if keep is not None and found[0] not in keep:
            continue
        _, context, anti, stereo = found
        to_pairs = not disjoint or n_used % 2 == 0
        to_items = not disjoint or n_used % 2 == 1
        n_used += 1
        if to_pairs:
            pairs.append(
                validate(
                    ContrastivePair, {"aligned": anti, "misaligned": stereo}, path=path, row=rownum
                )
            )
        if to_items:
            items.append(
                validate(
                    BehaviorItem,
                    {"prompt": context, "aligned": anti, "misaligned": stereo},
                    path=path,
                    row=rownum,
                )
            )
    if not pairs and not items:
        raise DatasetError(
            "the dataset is empty (no intrasentence examples"
            + (f" of bias types {sorted(keep)})" if keep is not None else ")"),
            path=path,
            hint="Check the file and the bias_types filter.",
        )
    return Behavior(name="stereoset", pairs=pairs, items=items, source=str(path))


def _stereoset_example(path: Path, rownum: int, example: Any) -> tuple[str, str, str, str]:
    def fail(problem: str, field: str, hint: str) -> DatasetError:
        return DatasetError(problem, path=path, row=rownum, field=field, hint=hint)

    if not isinstance(example, dict):
        raise fail("expected an object", "data.intrasentence", "Each example is an object.")
    context = example.get("context")
    if not isinstance(context, str) or not context.strip():
        raise fail("missing or empty", "context", "Give each example a context with BLANK.")
    sentences = example.get("sentences")
    if not isinstance(sentences, list):
        raise fail(
            "expected a list of sentences", "sentences", "List the sentences with their gold_label."
        )
    by_label: dict[str, str] = {}
    for s in sentences:
        if (
            isinstance(s, dict)
            and isinstance(s.get("gold_label"), str)
            and isinstance(s.get("sentence"), str)
        ):
            by_label.setdefault(s["gold_label"], s["sentence"])
    for label in ("stereotype", "anti-stereotype"):
        if label not in by_label:
            raise fail(
                f"no sentence with gold_label {label!r}",
                "sentences",
                "Each example needs a stereotype and an anti-stereotype sentence.",
            )
    bias_type = example.get("bias_type")
    return (str(bias_type), context, by_label["anti-stereotype"], by_label["stereotype"])


_BEHAVIOR_PREFIXES = {
    "advbench": lambda p: Behavior(name="advbench", items=load_advbench(p), source=str(p)),
    "repe-harmful": lambda p: Behavior(
        name="repe-harmful", pairs=load_repe_harmful_harmless(p), source=str(p)
    ),
    "stereoset": load_stereoset,
}
