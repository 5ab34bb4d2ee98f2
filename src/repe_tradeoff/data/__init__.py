"""Datasets: record schemas, the built-in datasets and loaders for public ones.

>>> from repe_tradeoff.data import load_behavior, load_helpfulness
>>> behavior = load_behavior("harmfulness")      # pairs + eval items, built in
>>> task = load_helpfulness("basic-qa")          # easy 4-choice questions, built in
>>> questions = load_short_answer("short-answer") # questions answered in a word or a number
>>> passages = load_neutral_text("neutral")        # everyday passages, for fluency
"""

from repe_tradeoff.data.answers import exact_match, first_sentence, normalise_answer
from repe_tradeoff.data.behaviors import (
    BUILTIN_BEHAVIORS,
    REFUSALS,
    load_advbench,
    load_behavior,
    load_repe_harmful_harmless,
    load_stereoset,
)
from repe_tradeoff.data.helpfulness import (
    BUILTIN_HELPFULNESS,
    MMLU_DIR_ENV,
    load_helpfulness,
    load_mmlu,
)
from repe_tradeoff.data.schemas import (
    Behavior,
    BehaviorItem,
    ContrastivePair,
    DatasetError,
    HelpfulnessTask,
    NeutralPassage,
    NeutralText,
    Question,
    ShortAnswerQuestion,
    ShortAnswerTask,
    canonical_json,
)
from repe_tradeoff.data.tables import load_csv, load_jsonl, write_jsonl
from repe_tradeoff.data.texts import (
    BUILTIN_NEUTRAL_TEXT,
    BUILTIN_SHORT_ANSWER,
    load_neutral_text,
    load_short_answer,
)

__all__ = [
    "BUILTIN_BEHAVIORS",
    "BUILTIN_HELPFULNESS",
    "BUILTIN_NEUTRAL_TEXT",
    "BUILTIN_SHORT_ANSWER",
    "MMLU_DIR_ENV",
    "REFUSALS",
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
    "exact_match",
    "first_sentence",
    "load_advbench",
    "load_behavior",
    "load_csv",
    "load_helpfulness",
    "load_jsonl",
    "load_mmlu",
    "load_neutral_text",
    "load_repe_harmful_harmless",
    "load_short_answer",
    "load_stereoset",
    "normalise_answer",
    "write_jsonl",
]
