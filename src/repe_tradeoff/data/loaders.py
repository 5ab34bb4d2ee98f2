"""Loaders for the built-in datasets and for local copies of public ones.

Every loader reads a local file or folder; the Hugging Face hub is used only for
``mmlu:SUBJECT`` when no local folder is given and the optional ``datasets`` package is
installed. Problems are reported as :class:`~repe_tradeoff.data.schemas.DatasetError`,
whose message names the file, the 1-based line (JSONL) or row (CSV), the field, and
what to do.

Line and row numbers: a JSONL line is the physical line of the file. A CSV row counts
as a spreadsheet does: in a file with a header the header is row 1 and the first record
row 2; in the header-less MMLU files the first record is row 1.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from repe_tradeoff.data.schemas import (
    Behavior,
    BehaviorItem,
    ContrastivePair,
    DatasetError,
    HelpfulnessTask,
    Question,
)

__all__ = [
    "BUILTIN_BEHAVIORS",
    "BUILTIN_HELPFULNESS",
    "MMLU_DIR_ENV",
    "REFUSALS",
    "load_advbench",
    "load_behavior",
    "load_csv",
    "load_helpfulness",
    "load_jsonl",
    "load_mmlu",
    "load_repe_harmful_harmless",
    "load_stereoset",
    "write_jsonl",
]

T = TypeVar("T", bound=BaseModel)

#: Built-in behaviors: name -> (pairs file, eval file) in ``repe_tradeoff/data/builtin``.
BUILTIN_BEHAVIORS: dict[str, tuple[str, str]] = {
    "harmfulness": ("harmfulness_pairs.jsonl", "harmfulness_eval.jsonl"),
    "sentiment": ("sentiment_pairs.jsonl", "sentiment_eval.jsonl"),
    "fairness": ("fairness_pairs.jsonl", "fairness_eval.jsonl"),
}
#: Built-in helpfulness tasks: name -> questions file.
BUILTIN_HELPFULNESS: dict[str, str] = {"basic-qa": "basic_qa.jsonl"}

#: Environment variable naming a local folder of the original MMLU CSV files.
MMLU_DIR_ENV = "REPE_TRADEOFF_MMLU_DIR"

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

_MMLU_HINT = (
    f"Set {MMLU_DIR_ENV} to a folder of the MMLU CSV files (<folder>/test/<subject>_test.csv), "
    "write the spec as 'mmlu:SUBJECT@/path/to/folder', or install the 'datasets' package "
    "to download cais/mmlu from the Hugging Face hub."
)


# --------------------------------------------------------------------------- helpers


def _builtin_file(filename: str) -> Any:
    return importlib.resources.files("repe_tradeoff.data").joinpath("builtin", filename)


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise DatasetError("is a folder, not a file", path=path, hint="Pass the path of a file.")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError("file not found", path=path, hint="Check the path.") from None
    except OSError as exc:
        raise DatasetError(f"cannot be read ({exc.strerror or exc})", path=path) from None


def _decode(data: bytes, path: Path) -> str:
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(
            "is not valid UTF-8", path=path, line=line, hint="Save the file as UTF-8."
        ) from None


def _loc_name(loc: Sequence[int | str]) -> str | None:
    if not loc:
        return None
    name = str(loc[0])
    for part in loc[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def _validation_to_dataset_error(
    exc: ValidationError,
    *,
    path: Path,
    line: int | None = None,
    row: int | None = None,
    rename: Mapping[str, str] | None = None,
) -> DatasetError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _loc_name(first["loc"])
    if field is not None and rename:
        field = rename.get(field, field)
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        problem = "required field is missing"
        hint = f"Add the field '{field}' to this record."
    else:
        problem = message
        hint = f"Fix the value of '{field}'." if field else "Fix this record."
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problem(s) in this record)"
    return DatasetError(problem, path=path, line=line, row=row, field=field, hint=hint)


def _validate(
    schema: type[T],
    obj: Mapping[str, Any],
    *,
    path: Path,
    line: int | None = None,
    row: int | None = None,
    rename: Mapping[str, str] | None = None,
) -> T:
    try:
        return schema.model_validate(obj)
    except ValidationError as exc:
        raise _validation_to_dataset_error(
            exc, path=path, line=line, row=row, rename=rename
        ) from None


class _Collector:
    """Collect records, either raising on the first invalid one or skipping with a warning."""

    def __init__(self, path: Path, skip_invalid: bool) -> None:
        self.path = path
        self.skip_invalid = skip_invalid
        self.records: list[Any] = []
        self.skipped: list[DatasetError] = []

    def add(self, make: Any) -> None:
        try:
            self.records.append(make())
        except DatasetError as exc:
            if not self.skip_invalid:
                raise
            self.skipped.append(exc)

    def finish(self, what: str) -> list[Any]:
        if self.skipped:
            warnings.warn(
                f"{self.path}: skipped {len(self.skipped)} invalid record(s); "
                f"first: {self.skipped[0]}",
                stacklevel=3,
            )
        if not self.records:
            reason = "no valid records" if self.skipped else "no records"
            raise DatasetError(
                f"the dataset is empty ({reason})",
                path=self.path,
                hint=f"Add at least one {what}.",
            )
        return self.records


def _fields_hint(schema: type[BaseModel]) -> str:
    return ", ".join(schema.model_fields)


# --------------------------------------------------------------------------- JSONL


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed JSON value) for each non-blank line."""
    text = _decode(_read_bytes(path), path)
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"malformed JSON ({exc.msg} at column {exc.colno})",
                path=path,
                line=lineno,
                hint="Each line must hold exactly one JSON object; fix or delete this line.",
            ) from None
        except RecursionError:
            raise DatasetError(
                "malformed JSON (nested too deeply)",
                path=path,
                line=lineno,
                hint="Each line must hold exactly one JSON object; fix or delete this line.",
            ) from None
        yield lineno, value


def load_jsonl(path: str | Path, schema: type[T], *, skip_invalid: bool = False) -> list[T]:
    """Read a JSON Lines file, one ``schema`` record (a JSON object) per line.

    Blank lines are ignored. With ``skip_invalid`` a record that fails validation is
    skipped (with one warning for the file) instead of raising; malformed JSON always raises.
    An empty result raises :class:`DatasetError`.
    """
    path = Path(path)
    out = _Collector(path, skip_invalid)
    for lineno, value in _iter_jsonl(path):
        if not isinstance(value, dict):
            raise DatasetError(
                f"expected a JSON object, got {type(value).__name__}",
                path=path,
                line=lineno,
                hint=f"Write one object per line with the fields {_fields_hint(schema)}.",
            )
        out.add(lambda value=value, lineno=lineno: _validate(schema, value, path=path, line=lineno))
    return out.finish(f"{schema.__name__} record (one JSON object per line)")


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> Path:
    """Write records as JSON Lines (UTF-8, one canonical object per line); returns the path."""
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record.model_dump(), ensure_ascii=False, sort_keys=True) + "\n")
    return path


# --------------------------------------------------------------------------- CSV


def _iter_csv(
    path: Path, *, header: bool = True
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    text = _decode(_read_bytes(path), path)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise DatasetError(f"malformed CSV ({exc})", path=path, hint="Fix the quoting.") from None
    if not header:
        columns: list[str] = []
        body = list(enumerate(rows, start=1))
    else:
        if not rows:
            raise DatasetError(
                "the dataset is empty (no header row)", path=path, hint="Add a header row."
            )
        columns = [c.strip() for c in rows[0]]
        body = list(enumerate(rows[1:], start=2))
    return columns, ((n, r) for n, r in body if any(cell.strip() for cell in r))


def _require_columns(path: Path, columns: Sequence[str], needed: Iterable[str]) -> None:
    for name in needed:
        if name not in columns:
            raise DatasetError(
                f"missing column (header has: {', '.join(columns) or 'nothing'})",
                path=path,
                row=1,
                field=name,
                hint=f"Add a column named '{name}' to the header row.",
            )


def _cells(path: Path, rownum: int, columns: Sequence[str], row: Sequence[str]) -> dict[str, str]:
    if len(row) > len(columns):
        raise DatasetError(
            f"row has {len(row)} cells but the header has {len(columns)} columns",
            path=path,
            row=rownum,
            hint="Remove the extra cells or quote cells that contain commas.",
        )
    return {name: (row[i] if i < len(row) else "") for i, name in enumerate(columns)}


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _parse_answer(value: str, n_choices: int, *, path: Path, row: int, field: str) -> int:
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if len(text) == 1 and text.upper() in _LETTERS:
        return _LETTERS.index(text.upper())
    raise DatasetError(
        f"answer {value!r} is neither a 0-based index nor a letter",
        path=path,
        row=row,
        field=field,
        hint=f"Write the correct choice as 0..{n_choices - 1} or A..{_LETTERS[n_choices - 1]}.",
    )


def _question_columns(path: Path, columns: Sequence[str]) -> list[str]:
    for first, names in (
        ("choice_0", (f"choice_{i}" for i in range(len(columns)))),
        ("A", iter(_LETTERS)),
    ):
        if first in columns:
            found = []
            for name in names:
                if name not in columns:
                    break
                found.append(name)
            return found
    raise DatasetError(
        f"no choice columns (header has: {', '.join(columns)})",
        path=path,
        row=1,
        field="choices",
        hint="Name the choice columns choice_0, choice_1, ... or A, B, C, D.",
    )


def _question_from_cells(
    path: Path, rownum: int, cells: Mapping[str, str], choice_cols: Sequence[str]
) -> Question:
    choices = [cells[c] for c in choice_cols]
    while choices and not choices[-1].strip():  # trailing empty cells: fewer choices
        choices.pop()
    answer = _parse_answer(
        cells["answer"], max(len(choices), 1), path=path, row=rownum, field="answer"
    )
    obj: dict[str, Any] = {"question": cells["question"], "choices": choices, "answer": answer}
    if cells.get("subject", "").strip():
        obj["subject"] = cells["subject"]
    rename = {f"choices[{i}]": c for i, c in enumerate(choice_cols)}
    return _validate(Question, obj, path=path, row=rownum, rename=rename)


def load_csv(path: str | Path, schema: type[T], *, skip_invalid: bool = False) -> list[T]:
    """Read a CSV file with a header row, one ``schema`` record per row.

    Columns are the schema's field names (``aligned``, ``misaligned``; ``prompt``,
    ``aligned``, ``misaligned``). For :class:`Question` the columns are ``question``,
    the choices as ``choice_0, choice_1, ...`` or as ``A, B, C, D, ...``, ``answer``
    as a 0-based index (``2``) or a letter (``C``), and optionally ``subject``; trailing
    empty choice cells are dropped, so questions may have different numbers of choices.
    Extra columns and blank rows are ignored.
    """
    path = Path(path)
    columns, rows = _iter_csv(path)
    out = _Collector(path, skip_invalid)
    if schema is Question:
        _require_columns(path, columns, ("question", "answer"))
        choice_cols = _question_columns(path, columns)
        for rownum, row in rows:
            cells = _cells(path, rownum, columns, row)
            out.add(lambda n=rownum, c=cells: _question_from_cells(path, n, c, choice_cols))
    else:
        needed = [n for n, f in schema.model_fields.items() if f.is_required()]
        _require_columns(path, columns, needed)
        fields = [n for n in schema.model_fields if n in columns]
        for rownum, row in rows:
            cells = _cells(path, rownum, columns, row)
            obj = {n: cells[n] for n in fields if n in needed or cells[n].strip()}
            out.add(lambda n=rownum, o=obj: _validate(schema, o, path=path, row=n))
    return out.finish(f"{schema.__name__} row")


def _load_table(path: Path, schema: type[T], *, skip_invalid: bool = False) -> list[T]:
    if path.suffix.lower() == ".csv":
        return load_csv(path, schema, skip_invalid=skip_invalid)
    return load_jsonl(path, schema, skip_invalid=skip_invalid)


# --------------------------------------------------------------------------- behaviors


def _load_builtin(filename: str, schema: type[T]) -> list[T]:
    with importlib.resources.as_file(_builtin_file(filename)) as path:
        return load_jsonl(path, schema)


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
            pairs=_load_builtin(pairs_file, ContrastivePair),
            items=_load_builtin(eval_file, BehaviorItem),
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
            name=name or path.stem, pairs=_load_table(path, ContrastivePair), source=str(path)
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
        pairs=_load_table(pairs_path, ContrastivePair) if pairs_path else [],
        items=_load_table(eval_path, BehaviorItem) if eval_path else [],
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
    columns, rows = _iter_csv(path)
    _require_columns(path, columns, ("goal", "target"))
    out = _Collector(path, False)
    rename = {"prompt": "goal", "misaligned": "target"}
    for rownum, row in rows:
        cells = _cells(path, rownum, columns, row)
        obj = {
            "prompt": cells["goal"],
            "misaligned": cells["target"],
            "aligned": _refusal_for(cells["goal"]),
        }
        out.add(lambda n=rownum, o=obj: _validate(BehaviorItem, o, path=path, row=n, rename=rename))
    return out.finish("row with a goal and a target")


def _json_records(path: Path, split: str | None) -> list[tuple[dict[str, int], Any]]:
    """Rows of a JSON array, a JSON object of splits, or JSONL, with where each came from."""
    text = _decode(_read_bytes(path), path)
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
    return [({"line": n}, v) for n, v in _iter_jsonl(path)]


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
    out = _Collector(path, False)
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
    return _validate(
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
    text = _decode(_read_bytes(path), path)
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
                _validate(
                    ContrastivePair, {"aligned": anti, "misaligned": stereo}, path=path, row=rownum
                )
            )
        if to_items:
            items.append(
                _validate(
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


# --------------------------------------------------------------------------- helpfulness


def load_helpfulness(spec: str | Path, *, root: str | Path | None = None) -> HelpfulnessTask:
    """Load a helpfulness task (multiple-choice questions).

    ``spec`` is one of

    * ``basic-qa``: the built-in easy 4-choice questions;
    * ``mmlu:SUBJECT`` or ``mmlu:SUBJECT@/path/to/folder``: the MMLU test split of a
      subject (e.g. ``mmlu:high_school_geography``), see :func:`load_mmlu`; ``root``
      gives the folder when the spec does not;
    * a path to a JSONL file (:class:`Question` records) or a CSV file (see :func:`load_csv`).
    """
    text = str(spec)
    if isinstance(spec, str) and text in BUILTIN_HELPFULNESS:
        return HelpfulnessTask(
            name=text,
            questions=_load_builtin(BUILTIN_HELPFULNESS[text], Question),
            source=f"builtin:{text}",
        )
    if isinstance(spec, str) and text.startswith("mmlu:"):
        subject, at, folder = text[len("mmlu:") :].partition("@")
        if at and not folder:
            raise DatasetError(
                f"spec {text!r} has '@' but no folder", hint="Write 'mmlu:SUBJECT@/path/to/folder'."
            )
        return load_mmlu(subject, root=folder or root)
    path = Path(text)
    if path.is_file():
        return HelpfulnessTask(
            name=path.stem, questions=_load_table(path, Question), source=str(path)
        )
    raise DatasetError(
        f"unknown helpfulness task {text!r}: not a built-in "
        f"({', '.join(BUILTIN_HELPFULNESS)}), not mmlu:SUBJECT, not a file",
        path=path if path.exists() else None,
        hint="Use basic-qa, mmlu:SUBJECT[@folder], or a JSONL/CSV file of questions.",
    )


def load_mmlu(subject: str, *, root: str | Path | None = None) -> HelpfulnessTask:
    """The MMLU test questions of one subject.

    Read from ``root`` (or else the folder in ``$REPE_TRADEOFF_MMLU_DIR``) laid out as
    the original MMLU release: ``<root>/test/<subject>_test.csv`` (``<root>/<subject>_test.csv``
    also works), header-less rows ``question,A,B,C,D,answer_letter``. Without a folder,
    the ``cais/mmlu`` dataset is loaded through the optional ``datasets`` package.
    Rows that fail validation (e.g. duplicate choices) are skipped with a warning.
    """
    subject = subject.strip()
    if not re.fullmatch(r"[a-z0-9_]+", subject):
        raise DatasetError(
            f"invalid MMLU subject {subject!r}",
            hint="Use the lower-case subject name, e.g. mmlu:high_school_geography.",
        )
    folder = root if root not in (None, "") else os.environ.get(MMLU_DIR_ENV) or None
    if folder is not None:
        return _mmlu_from_folder(subject, Path(folder))
    return _mmlu_from_hub(subject)


def _mmlu_from_folder(subject: str, root: Path) -> HelpfulnessTask:
    if not root.is_dir():
        raise DatasetError("MMLU folder not found", path=root, hint=_MMLU_HINT)
    candidates = [root / "test" / f"{subject}_test.csv", root / f"{subject}_test.csv"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        available = sorted(
            p.name.removesuffix("_test.csv")
            for d in (root / "test", root)
            if d.is_dir()
            for p in d.glob("*_test.csv")
        )
        listing = ", ".join(available[:12]) + (" ..." if len(available) > 12 else "")
        raise DatasetError(
            f"no test file for MMLU subject {subject!r} (available: {listing or 'none'})",
            path=candidates[0],
            hint=_MMLU_HINT,
        )
    _, rows = _iter_csv(path, header=False)
    out = _Collector(path, skip_invalid=True)
    for rownum, row in rows:
        out.add(lambda n=rownum, r=row: _mmlu_row(path, n, r, subject))
    return HelpfulnessTask(
        name=f"mmlu:{subject}", questions=out.finish("question row"), source=str(path)
    )


def _mmlu_row(path: Path, rownum: int, row: Sequence[str], subject: str) -> Question:
    if len(row) < 3:
        raise DatasetError(
            f"expected question, choices and answer letter, got {len(row)} cells",
            path=path,
            row=rownum,
            hint="Each row is question,A,B,C,D,answer_letter (no header).",
        )
    question, *choices, letter = row
    answer = _parse_answer(letter, len(choices), path=path, row=rownum, field="answer")
    rename = {f"choices[{i}]": _LETTERS[i] for i in range(len(choices))}
    return _validate(
        Question,
        {"question": question, "choices": choices, "answer": answer, "subject": subject},
        path=path,
        row=rownum,
        rename=rename,
    )


def _mmlu_from_hub(subject: str) -> HelpfulnessTask:
    try:
        import datasets  # optional, not a dependency
    except ImportError:
        raise DatasetError(
            f"MMLU subject {subject!r}: no local folder is given and the 'datasets' "
            "package is not installed",
            hint=_MMLU_HINT,
        ) from None
    try:
        rows = datasets.load_dataset("cais/mmlu", subject, split="test")
    except Exception as exc:  # noqa: BLE001 (offline, unknown subject, any hub error)
        raise DatasetError(
            f"could not load cais/mmlu ({subject}) from the Hugging Face hub: {exc}",
            hint=_MMLU_HINT,
        ) from None
    source = Path(f"hf:cais/mmlu/{subject}")
    out = _Collector(source, skip_invalid=True)
    for i, row in enumerate(rows, start=1):
        obj = {k: row.get(k) for k in ("question", "choices", "answer")}
        obj["subject"] = row.get("subject") or subject
        out.add(lambda n=i, o=obj: _validate(Question, o, path=source, row=n))
    return HelpfulnessTask(
        name=f"mmlu:{subject}", questions=out.finish("question"), source=str(source)
    )
