"""Record schemas of the datasets: contrastive pairs, behavior items and questions.

Every record is a frozen pydantic model. Text fields are stripped of leading and
trailing whitespace and must not be empty afterwards. Unknown keys in the input are
ignored, so files may carry extra columns such as an id.

A :class:`Behavior` (pairs to read a direction from, items to score the behavior) and a
:class:`HelpfulnessTask` (multiple-choice questions) carry a ``sha256`` of their content,
computed from a canonical JSON text, so a run can record exactly which data it used.
"""

from __future__ import annotations

import hashlib
import json
import operator
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from repe_tradeoff.data.answers import normalise_answer
from repe_tradeoff.errors import RepeTradeoffError

__all__ = [
    "Behavior",
    "BehaviorItem",
    "ContrastivePair",
    "DatasetError",
    "HelpfulnessTask",
    "NeutralPassage",
    "NeutralText",
    "Question",
    "ShortAnswerQuestion",
    "ShortAnswerTask",
    "canonical_json",
    "content_hash",
]


class DatasetError(RepeTradeoffError):
    """A dataset could not be read or is invalid.

    The message names the file, the 1-based line (JSONL) or row (CSV), the field, and
    what to do about it; the same facts are kept as attributes.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.line = line
        self.row = row
        self.field = field
        self.hint = hint
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        message = problem if not where else f"{', '.join(where)}: {problem}"
        if hint:
            message = f"{message.rstrip('.')}. {hint}"
        super().__init__(message)


def _clean_text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty (after stripping whitespace)")
    return value


Text = Annotated[str, AfterValidator(_clean_text)]


def _as_index(value: Any) -> Any:
    # Integers (including numpy integers) only: no bools, floats or strings like "B".
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, (bool, str, bytes, float)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise PydanticCustomError(
        "index_type", "must be an integer index (0-based), got {value}", {"value": repr(value)}
    )


_RECORD_CONFIG = ConfigDict(frozen=True, extra="ignore")


class ContrastivePair(BaseModel):
    """Two texts in the same style that differ in the behavior only.

    A behavior direction is read from the difference of their hidden states:
    ``aligned`` shows the behavior steering should increase, ``misaligned`` its opposite.
    """

    model_config = _RECORD_CONFIG

    aligned: Text
    misaligned: Text

    @field_validator("misaligned")
    @classmethod
    def _differs(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("aligned") == value:
            raise ValueError("is identical to 'aligned'; a pair must differ in the behavior")
        return value


class BehaviorItem(BaseModel):
    """An evaluation prompt with an aligned and a misaligned response.

    The forced-choice scorer compares the model's log-likelihood of the two responses
    after the prompt.
    """

    model_config = _RECORD_CONFIG

    prompt: Text
    aligned: Text
    misaligned: Text

    @field_validator("misaligned")
    @classmethod
    def _differs(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("aligned") == value:
            raise ValueError("is identical to 'aligned'; the two responses must differ")
        return value


class Question(BaseModel):
    """A multiple-choice question in the layout of ``cais/mmlu``.

    ``answer`` is the 0-based index of the correct choice. The question text is stored
    bare ("What is the capital of France?"); prompt templates are applied by the scorer.
    """

    model_config = _RECORD_CONFIG

    question: Text
    choices: list[Text]
    answer: Annotated[int, BeforeValidator(_as_index)]
    subject: Text | None = None

    @field_validator("choices")
    @classmethod
    def _check_choices(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError(f"needs at least 2 choices, got {len(value)}")
        seen: dict[str, int] = {}
        for i, choice in enumerate(value):
            if choice in seen:
                raise ValueError(f"choice {i} ({choice!r}) duplicates choice {seen[choice]}")
            seen[choice] = i
        return value

    @field_validator("answer")
    @classmethod
    def _check_answer(cls, value: int, info: ValidationInfo) -> int:
        choices = info.data.get("choices")
        if choices is not None and not 0 <= value < len(choices):
            raise ValueError(
                f"answer index {value} is out of range for {len(choices)} choices "
                f"(valid: 0..{len(choices) - 1})"
            )
        return value


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no spaces, UTF-8 characters kept."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(value: Any) -> str:
    """SHA-256 of a value's canonical JSON: the one hash of dataset content in the package."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


_SET_CONFIG = ConfigDict(frozen=True, extra="forbid")


class Behavior(BaseModel):
    """A behavior: contrastive pairs to read its direction, items to measure it.

    At least one of the two lists is non-empty. ``source`` says where the data came
    from (a built-in name or a path) and is not part of the content hash.
    """

    model_config = _SET_CONFIG

    name: Text
    pairs: list[ContrastivePair] = []
    items: list[BehaviorItem] = []
    source: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Behavior:
        if not self.pairs and not self.items:
            raise ValueError(f"behavior {self.name!r} has neither pairs nor items")
        return self

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of the pairs and items (not of name or source)."""
        return content_hash(
            {
                "pairs": [p.model_dump() for p in self.pairs],
                "items": [i.model_dump() for i in self.items],
            }
        )


class HelpfulnessTask(BaseModel):
    """A helpfulness task: a non-empty list of multiple-choice questions."""

    model_config = _SET_CONFIG

    name: Text
    questions: list[Question]
    source: str | None = None

    @field_validator("questions")
    @classmethod
    def _not_empty(cls, value: list[Question]) -> list[Question]:
        if not value:
            raise ValueError("a helpfulness task needs at least one question")
        return value

    @property
    def n_choices(self) -> int | None:
        """The number of choices if every question has the same number, else None."""
        counts = {len(q.choices) for q in self.questions}
        return counts.pop() if len(counts) == 1 else None

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of the questions (not of name or source)."""
        return content_hash({"questions": [q.model_dump() for q in self.questions]})


# --------------------------------------------------------------------------- generative texts


class ShortAnswerQuestion(BaseModel):
    """A question answered in a word or a number, with its accepted answer variants.

    ``answers`` lists every accepted spelling ("4", "four"; "H2O", "H₂O"); each must keep
    a word or a number after :func:`~repe_tradeoff.data.answers.normalise_answer`, since an
    empty answer would match any reply. ``category`` groups questions for per-category scores.
    """

    model_config = _RECORD_CONFIG

    question: Text
    answers: list[Text]
    category: Text

    @field_validator("answers")
    @classmethod
    def _check_answers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one accepted answer")
        for i, answer in enumerate(value):
            if not normalise_answer(answer):
                raise ValueError(
                    f"answer {i} ({answer!r}) is empty after normalisation (articles and "
                    "punctuation are dropped); write the answer itself"
                )
        return value


class ShortAnswerTask(BaseModel):
    """A generative helpfulness task: a non-empty list of short-answer questions."""

    model_config = _SET_CONFIG

    name: Text
    questions: list[ShortAnswerQuestion]
    source: str | None = None

    @field_validator("questions")
    @classmethod
    def _not_empty(cls, value: list[ShortAnswerQuestion]) -> list[ShortAnswerQuestion]:
        if not value:
            raise ValueError("a short-answer task needs at least one question")
        return value

    @property
    def categories(self) -> list[str]:
        """The categories in order of first appearance."""
        return list(dict.fromkeys(q.category for q in self.questions))

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of the questions (not of name or source)."""
        return content_hash({"questions": [q.model_dump() for q in self.questions]})


class NeutralPassage(BaseModel):
    """A short everyday passage with no behavior in it, for measuring fluency."""

    model_config = _RECORD_CONFIG

    text: Text
    topic: Text | None = None


class NeutralText(BaseModel):
    """A non-empty list of neutral passages."""

    model_config = _SET_CONFIG

    name: Text
    passages: list[NeutralPassage]
    source: str | None = None

    @field_validator("passages")
    @classmethod
    def _not_empty(cls, value: list[NeutralPassage]) -> list[NeutralPassage]:
        if not value:
            raise ValueError("a neutral text set needs at least one passage")
        return value

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.passages]

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of the passages (not of name or source)."""
        return content_hash({"passages": [p.model_dump() for p in self.passages]})
