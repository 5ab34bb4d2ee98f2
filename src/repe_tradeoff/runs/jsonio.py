"""Writing and reading run files' raw forms: atomic writes (a crash never leaves half a file), JSON
and JSONL, rows numbered by line for error messages, and the rounding that makes a norm a key.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from repe_tradeoff.errors import RepeTradeoffError


class RunFileError(RepeTradeoffError):
    """A run folder file that cannot be read; the message names the file and what to do."""


class FormatVersionError(RunFileError):
    """A run file written by another version of the format: it must be rewritten, not guessed at."""


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (blank lines skipped); a bad line names its number."""
    return [row for _, row in numbered_rows(path)]


def numbered_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line of a JSON-lines file."""
    path = Path(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunFileError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise RunFileError(f"{path}:{lineno}: expected one JSON object per line")
            rows.append((lineno, obj))
    return rows


def as_number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool):
        value = None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RunFileError(f"{where}: `{key}` must be a number, got {value!r}") from None


_NORM_DIGITS = 9


def norm_key(r: float) -> float:
    """A norm rounded so that the same grid value read from two files compares equal."""
    return round(float(r), _NORM_DIGITS)
