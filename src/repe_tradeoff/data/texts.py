"""Loaders for the texts of the generative tasks: short-answer questions and neutral passages.

Both accept a built-in name or the path of a JSONL file; problems are reported as
:class:`~repe_tradeoff.data.schemas.DatasetError` naming the file, line and field.

>>> from repe_tradeoff.data import load_neutral_text, load_short_answer
>>> task = load_short_answer("short-answer")    # 180 questions, 6 categories
>>> neutral = load_neutral_text("neutral")      # short everyday passages
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from repe_tradeoff.data.schemas import (
    DatasetError,
    NeutralPassage,
    NeutralText,
    ShortAnswerQuestion,
    ShortAnswerTask,
)
from repe_tradeoff.data.tables import load_jsonl

__all__ = ["BUILTIN_NEUTRAL_TEXT", "BUILTIN_SHORT_ANSWER", "load_neutral_text", "load_short_answer"]

T = TypeVar("T", bound=BaseModel)

#: Built-in short-answer tasks: name -> file in ``repe_tradeoff/data/builtin``.
BUILTIN_SHORT_ANSWER: dict[str, str] = {"short-answer": "short_answer.jsonl"}
#: Built-in neutral text sets: name -> file in ``repe_tradeoff/data/builtin``.
BUILTIN_NEUTRAL_TEXT: dict[str, str] = {"neutral": "neutral_text.jsonl"}


def _records(
    spec: str | Path, builtins: dict[str, str], schema: type[T], what: str, example: str
) -> tuple[str, list[T], str]:
    """(name, records, source) of a built-in name or a JSONL path."""
    text = str(spec)
    if isinstance(spec, str) and text in builtins:
        resource = importlib.resources.files("repe_tradeoff.data").joinpath(
            "builtin", builtins[text]
        )
        with importlib.resources.as_file(resource) as path:
            return text, load_jsonl(path, schema), f"builtin:{text}"
    path = Path(text)
    if path.is_file():
        return path.stem, load_jsonl(path, schema), str(path)
    raise DatasetError(
        f"unknown {what} {text!r}: not a built-in ({', '.join(builtins)}) and not a file",
        path=path if path.exists() else None,
        hint=f"Use {' or '.join(builtins)}, or the path of a JSONL file with lines like {example}.",
    )


def load_short_answer(spec: str | Path = "short-answer") -> ShortAnswerTask:
    """Load short-answer questions: the built-in ``short-answer`` or a JSONL file of
    :class:`ShortAnswerQuestion` records (``question``, ``answers``, ``category``)."""
    name, questions, source = _records(
        spec,
        BUILTIN_SHORT_ANSWER,
        ShortAnswerQuestion,
        "short-answer task",
        '{"question": "What is 2 + 2?", "answers": ["4", "four"], "category": "arithmetic"}',
    )
    return ShortAnswerTask(name=name, questions=questions, source=source)


def load_neutral_text(spec: str | Path = "neutral") -> NeutralText:
    """Load neutral passages: the built-in ``neutral`` or a JSONL file of
    :class:`NeutralPassage` records (``text``, optional ``topic``)."""
    name, passages, source = _records(
        spec,
        BUILTIN_NEUTRAL_TEXT,
        NeutralPassage,
        "neutral text set",
        '{"text": "Rain is expected in the afternoon...", "topic": "weather"}',
    )
    return NeutralText(name=name, passages=passages, source=source)
