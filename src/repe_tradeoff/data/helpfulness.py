"""Helpfulness tasks: the built-in multiple-choice questions, local question files and MMLU.

The Hugging Face hub is used only for ``mmlu:SUBJECT`` when no local folder is given and the
optional ``datasets`` package is installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from repe_tradeoff.data.schemas import DatasetError, HelpfulnessTask, Question
from repe_tradeoff.data.tables import (
    LETTERS,
    Collector,
    iter_csv,
    load_builtin,
    load_table,
    parse_answer,
    validate,
)

__all__ = ["BUILTIN_HELPFULNESS", "MMLU_DIR_ENV", "load_helpfulness", "load_mmlu"]

#: Built-in helpfulness tasks: name -> questions file.
BUILTIN_HELPFULNESS: dict[str, str] = {"basic-qa": "basic_qa.jsonl"}

#: Environment variable naming a local folder of the original MMLU CSV files.
MMLU_DIR_ENV = "REPE_TRADEOFF_MMLU_DIR"

_MMLU_HINT = (
    f"Set {MMLU_DIR_ENV} to a folder of the MMLU CSV files (<folder>/test/<subject>_test.csv), "
    "write the spec as 'mmlu:SUBJECT@/path/to/folder', or install the 'datasets' package "
    "to download cais/mmlu from the Hugging Face hub."
)


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
            questions=load_builtin(BUILTIN_HELPFULNESS[text], Question),
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
            name=path.stem, questions=load_table(path, Question), source=str(path)
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
    _, rows = iter_csv(path, header=False)
    out = Collector(path, skip_invalid=True)
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
    answer = parse_answer(letter, len(choices), path=path, row=rownum, field="answer")
    rename = {f"choices[{i}]": LETTERS[i] for i in range(len(choices))}
    return validate(
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
    out = Collector(source, skip_invalid=True)
    for i, row in enumerate(rows, start=1):
        obj = {k: row.get(k) for k in ("question", "choices", "answer")}
        obj["subject"] = row.get("subject") or subject
        out.add(lambda n=i, o=obj: validate(Question, o, path=source, row=n))
    return HelpfulnessTask(
        name=f"mmlu:{subject}", questions=out.finish("question"), source=str(source)
    )
