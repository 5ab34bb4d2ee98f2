"""Reading dataset tables: JSONL and CSV files validated against a record schema.

Problems are reported as :class:`~repe_tradeoff.data.schemas.DatasetError`, whose message
names the file, the 1-based line (JSONL) or row (CSV), the field, and what to do.

Line and row numbers: a JSONL line is the physical line of the file. A CSV row counts
as a spreadsheet does: in a file with a header the header is row 1 and the first record
row 2; in the header-less MMLU files the first record is row 1.
"""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from repe_tradeoff.data.schemas import DatasetError, Question

__all__ = ["load_csv", "load_jsonl", "write_jsonl"]

T = TypeVar("T", bound=BaseModel)


def _builtin_file(filename: str) -> Any:
    return importlib.resources.files("repe_tradeoff.data").joinpath("builtin", filename)


def read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise DatasetError("is a folder, not a file", path=path, hint="Pass the path of a file.")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError("file not found", path=path, hint="Check the path.") from None
    except OSError as exc:
        raise DatasetError(f"cannot be read ({exc.strerror or exc})", path=path) from None


def decode(data: bytes, path: Path) -> str:
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


def validate(
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


class Collector:
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


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed JSON value) for each non-blank line."""
    text = decode(read_bytes(path), path)
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
    out = Collector(path, skip_invalid)
    for lineno, value in iter_jsonl(path):
        if not isinstance(value, dict):
            raise DatasetError(
                f"expected a JSON object, got {type(value).__name__}",
                path=path,
                line=lineno,
                hint=f"Write one object per line with the fields {_fields_hint(schema)}.",
            )
        out.add(lambda value=value, lineno=lineno: validate(schema, value, path=path, line=lineno))
    return out.finish(f"{schema.__name__} record (one JSON object per line)")


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> Path:
    """Write records as JSON Lines (UTF-8, one canonical object per line); returns the path."""
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record.model_dump(), ensure_ascii=False, sort_keys=True) + "\n")
    return path


# --------------------------------------------------------------------------- CSV


def iter_csv(
    path: Path, *, header: bool = True
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    text = decode(read_bytes(path), path)
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


def require_columns(path: Path, columns: Sequence[str], needed: Iterable[str]) -> None:
    for name in needed:
        if name not in columns:
            raise DatasetError(
                f"missing column (header has: {', '.join(columns) or 'nothing'})",
                path=path,
                row=1,
                field=name,
                hint=f"Add a column named '{name}' to the header row.",
            )


def row_cells(
    path: Path, rownum: int, columns: Sequence[str], row: Sequence[str]
) -> dict[str, str]:
    if len(row) > len(columns):
        raise DatasetError(
            f"row has {len(row)} cells but the header has {len(columns)} columns",
            path=path,
            row=rownum,
            hint="Remove the extra cells or quote cells that contain commas.",
        )
    return {name: (row[i] if i < len(row) else "") for i, name in enumerate(columns)}


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def parse_answer(value: str, n_choices: int, *, path: Path, row: int, field: str) -> int:
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if len(text) == 1 and text.upper() in LETTERS:
        return LETTERS.index(text.upper())
    raise DatasetError(
        f"answer {value!r} is neither a 0-based index nor a letter",
        path=path,
        row=row,
        field=field,
        hint=f"Write the correct choice as 0..{n_choices - 1} or A..{LETTERS[n_choices - 1]}.",
    )


def _question_columns(path: Path, columns: Sequence[str]) -> list[str]:
    for first, names in (
        ("choice_0", (f"choice_{i}" for i in range(len(columns)))),
        ("A", iter(LETTERS)),
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
    answer = parse_answer(
        cells["answer"], max(len(choices), 1), path=path, row=rownum, field="answer"
    )
    obj: dict[str, Any] = {"question": cells["question"], "choices": choices, "answer": answer}
    if cells.get("subject", "").strip():
        obj["subject"] = cells["subject"]
    rename = {f"choices[{i}]": c for i, c in enumerate(choice_cols)}
    return validate(Question, obj, path=path, row=rownum, rename=rename)


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
    columns, rows = iter_csv(path)
    out = Collector(path, skip_invalid)
    if schema is Question:
        require_columns(path, columns, ("question", "answer"))
        choice_cols = _question_columns(path, columns)
        for rownum, row in rows:
            cells = row_cells(path, rownum, columns, row)
            out.add(lambda n=rownum, c=cells: _question_from_cells(path, n, c, choice_cols))
    else:
        needed = [n for n, f in schema.model_fields.items() if f.is_required()]
        require_columns(path, columns, needed)
        fields = [n for n in schema.model_fields if n in columns]
        for rownum, row in rows:
            cells = row_cells(path, rownum, columns, row)
            obj = {n: cells[n] for n in fields if n in needed or cells[n].strip()}
            out.add(lambda n=rownum, o=obj: validate(schema, o, path=path, row=n))
    return out.finish(f"{schema.__name__} row")


def load_table(path: Path, schema: type[T], *, skip_invalid: bool = False) -> list[T]:
    if path.suffix.lower() == ".csv":
        return load_csv(path, schema, skip_invalid=skip_invalid)
    return load_jsonl(path, schema, skip_invalid=skip_invalid)


def load_builtin(filename: str, schema: type[T]) -> list[T]:
    with importlib.resources.as_file(_builtin_file(filename)) as path:
        return load_jsonl(path, schema)
