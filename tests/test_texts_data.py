"""Tests of the short-answer and neutral-text data, their loaders and answer matching (no model)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from repe_tradeoff.data import (
    DatasetError,
    NeutralText,
    ShortAnswerQuestion,
    ShortAnswerTask,
    exact_match,
    first_sentence,
    load_neutral_text,
    load_short_answer,
    normalise_answer,
)


@pytest.fixture(scope="module")
def short_answer() -> ShortAnswerTask:
    return load_short_answer("short-answer")


@pytest.fixture(scope="module")
def neutral() -> NeutralText:
    return load_neutral_text("neutral")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- short-answer data


def test_short_answer_size_and_balanced_categories(short_answer):
    counts = Counter(q.category for q in short_answer.questions)
    assert len(short_answer.questions) >= 150
    assert len(counts) >= 5
    assert max(counts.values()) <= 1.5 * min(counts.values()), counts
    assert short_answer.categories == list(counts)  # order of first appearance
    assert short_answer.source == "builtin:short-answer"


def test_short_answer_has_the_kinds_of_question_asked_for(short_answer):
    text = " ".join(q.question for q in short_answer.questions)
    assert len(re.findall(r"\d+ [+-] \d+ [+-] \d+", text)) >= 5  # two-step arithmetic
    assert "How many centimetres are in 3 metres?" in text
    for word in ("capital", "colour", "animal", "day", "opposite", "chemical symbol"):
        assert word in text, word


def test_short_answer_questions_are_unique(short_answer):
    keys = [re.sub(r"\W+", " ", q.question.lower()).strip() for q in short_answer.questions]
    assert len(set(keys)) == len(keys), [k for k, n in Counter(keys).items() if n > 1]


def test_every_answer_keeps_a_word_after_normalisation(short_answer):
    for q in short_answer.questions:
        assert q.answers, q.question
        for answer in q.answers:
            assert re.search(r"\w", normalise_answer(answer)), (q.question, answer)


def test_no_question_contains_its_own_answer(short_answer):
    # Restating the question must never count as answering it.
    for q in short_answer.questions:
        assert not exact_match(q.question, q.answers), q.question


def test_numeric_answers_accept_digits_and_words(short_answer):
    # Variants written in the file ("12", "twelve") agree with each other after normalisation.
    for q in short_answer.questions:
        digits = [a for a in q.answers if a.isdigit() and int(a) <= 100]
        if digits:
            forms = {normalise_answer(a) for a in q.answers if "," not in a}
            assert forms == {digits[0]}, (q.question, q.answers, forms)


def test_short_answer_sha256_is_over_the_canonical_records(short_answer, tmp_path):
    records = [
        {"answers": q.answers, "category": q.category, "question": q.question}
        for q in short_answer.questions
    ]
    text = json.dumps(
        {"questions": records}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    assert short_answer.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    renamed = short_answer.model_copy(update={"name": "other", "source": "elsewhere"})
    assert renamed.sha256 == short_answer.sha256
    changed = ShortAnswerTask(name="x", questions=short_answer.questions[1:])
    assert changed.sha256 != short_answer.sha256


# --------------------------------------------------------------------------- neutral data


def test_neutral_passages_are_short_and_varied(neutral):
    assert len(neutral.passages) >= 60
    assert len({p.topic for p in neutral.passages}) >= 5
    for p in neutral.passages:
        words = len(p.text.split())
        sentences = len(re.findall(r"[.!?](?=\s|$)", p.text))
        assert 30 <= words <= 60, (words, p.text)
        assert 2 <= sentences <= 3, (sentences, p.text)
    assert len(set(neutral.texts)) == len(neutral.texts)
    assert neutral.source == "builtin:neutral"


def test_neutral_passages_carry_no_behavior(neutral):
    laden = re.compile(
        r"\b(sorry|can't help|refuse|harm\w*|kill\w*|weapon\w*|hate\w*|love\w*|terrible|awful|"
        r"wonderful|amazing|horrible|best|worst|stupid|dangerous|illegal)\b",
        re.IGNORECASE,
    )
    hits = [
        (m.group(0), p.text[:40]) for p in neutral.passages for m in [laden.search(p.text)] if m
    ]
    assert not hits


def test_neutral_sha256_ignores_name_and_source(neutral):
    records = [{"text": p.text, "topic": p.topic} for p in neutral.passages]
    text = json.dumps(
        {"passages": records}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    assert neutral.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert neutral.model_copy(update={"source": "x"}).sha256 == neutral.sha256


# --------------------------------------------------------------------------- normalisation

NORMALISED = [
    ("Paris", "paris"),
    ("  PARIS!  ", "paris"),
    ("The answer is Paris.", "paris"),
    ("Answer: the Moon", "moon"),
    ("the Sun", "sun"),
    ("a herbivore", "herbivore"),
    ("four", "4"),
    ("Four.", "4"),
    ("4", "4"),
    ("zero", "0"),
    ("twelve", "12"),
    ("twenty-one", "21"),
    ("twenty one", "21"),
    ("ninety-nine", "99"),
    ("one hundred", "100"),
    ("forty", "40"),
    ("H₂O", "h2o"),
    ("H2O", "h2o"),
    ("CO₂", "co2"),
    ("1,000", "1000"),
    ("3.5 kg.", "3.5 kg"),
    ("Brasília", "brasilia"),
    ("New   Delhi", "new delhi"),
    ("6 + 8 = 14", "6 8 14"),
    ("The.", ""),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISED)
def test_normalise_answer(text, expected):
    assert normalise_answer(text) == expected


# --------------------------------------------------------------------------- first sentence and exact match


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The capital of France is Paris. It is large.", "The capital of France is Paris"),
        ("It weighs 3.5 kg. Then", "It weighs 3.5 kg"),
        ("\n\n6 + 8 = 14\n\nThis is", "6 + 8 = 14"),
        ('The answer is "green". Next', 'The answer is "green"'),
        ('It said "Ave." Then', 'It said "Ave'),
        ("Is it Rome? Yes", "Is it Rome"),
        ("no end mark", "no end mark"),
        ("", ""),
    ],
)
def test_first_sentence(text, expected):
    assert first_sentence(text) == expected


MATCHES = [
    # (generation, accepted answers, expected) - written by hand
    ("Paris", ["Paris"], True),
    ("paris.", ["Paris"], True),
    ("The capital of France is Paris.", ["Paris"], True),  # answer inside a longer sentence
    ("The answer is 4.", ["4", "four"], True),
    ("Four", ["4"], True),  # number word vs digit
    ("2 + 2 = 4", ["4", "four"], True),
    ("The answer is four.", ["4"], True),
    ("The chemical formula of water is H₂O.", ["H2O"], True),  # subscript vs plain digit
    ("It is h2o", ["H₂O"], True),
    ("A week has seven days.", ["7"], True),
    ('The answer is "green"', ["green"], True),
    ("The capital of India is New Delhi.", ["New Delhi", "Delhi"], True),
    ("Delhi", ["New Delhi", "Delhi"], True),
    ("One thousand", ["1000", "1,000", "one thousand"], True),
    ("There are 1,000 grams in a kilogram.", ["1000"], True),
    ("6 + 8 = 14", ["4", "four"], False),  # "4" must not match "14"
    ("14", ["4"], False),
    ("It is 40.", ["4"], False),
    ("The capital is Parisian in style.", ["Paris"], False),  # whole words only
    ("Delhi", ["New Delhi"], False),  # every word of the answer is needed
    ("The capital of India is Mumbai. New Delhi is", ["New Delhi"], False),  # first sentence only
    ("Rome\nParis", ["Paris"], False),  # first line only
    ("To add 7 and 5, you simply add them", ["12", "twelve"], False),
    ("The day after Monday is a special day", ["Tuesday"], False),
    ("", ["Paris"], False),
    ("The answer is 3.5.", ["35"], False),  # the decimal point is kept
    ("The sky is blue", "blue", True),  # a single answer as a string
]


@pytest.mark.parametrize(("generation", "answers", "expected"), MATCHES)
def test_exact_match_truth_table(generation, answers, expected):
    assert exact_match(generation, answers) is expected


def test_exact_match_rejects_answers_that_normalise_to_nothing():
    with pytest.raises(ValueError, match="no accepted answer"):
        exact_match("anything at all", ["The", "?"])
    with pytest.raises(ValueError, match="no accepted answer"):
        exact_match("anything at all", [])


# --------------------------------------------------------------------------- loaders


def test_load_short_answer_from_a_file(tmp_path):
    path = _write(
        tmp_path / "mine.jsonl",
        [
            '{"question": "What is 1 + 1?", "answers": ["2", "two"], "category": "arithmetic", "id": 7}',
            "",
            '{"question": " Capital of Peru? ", "answers": ["Lima"], "category": "capitals"}',
        ],
    )
    task = load_short_answer(path)
    assert task.name == "mine" and task.source == str(path)
    assert [q.question for q in task.questions] == ["What is 1 + 1?", "Capital of Peru?"]
    assert task.categories == ["arithmetic", "capitals"]
    assert load_short_answer(str(path)).sha256 == task.sha256


def test_load_neutral_text_from_a_file(tmp_path):
    path = _write(tmp_path / "n.jsonl", ['{"text": "It rained. Then it stopped."}'])
    texts = load_neutral_text(path)
    assert texts.texts == ["It rained. Then it stopped."]
    assert texts.passages[0].topic is None


@pytest.mark.parametrize(
    ("lines", "pattern"),
    [
        (
            [
                '{"question": "Q?", "answers": ["a1"], "category": "c"}',
                '{"question": "Q2", "answers": ',
            ],
            r"bad\.jsonl, line 2: malformed JSON",
        ),
        (
            ['{"question": "Q?", "category": "c"}'],
            r"line 1, field 'answers': required field is missing",
        ),
        (
            ['{"question": "Q?", "answers": [], "category": "c"}'],
            r"line 1, field 'answers': needs at least one accepted answer",
        ),
        (
            [
                '{"question": "Q?", "answers": ["4"], "category": "c"}',
                '{"question": "Q?", "answers": ["The"], "category": "c"}',
            ],
            r"line 2, field 'answers': answer 0 \('The'\) is empty after normalisation",
        ),
        (
            ['{"question": "Q?", "answers": "4", "category": "c"}'],
            r"line 1, field 'answers'",
        ),
        (
            ['{"question": "  ", "answers": ["4"], "category": "c"}'],
            r"line 1, field 'question': .*must not be empty",
        ),
        (['["What is 2 + 2?", "4"]'], r"line 1: expected a JSON object, got list"),
    ],
)
def test_short_answer_file_errors_name_line_and_field(tmp_path, lines, pattern):
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DatasetError, match=pattern):
        load_short_answer(path)


def test_neutral_file_errors(tmp_path):
    path = _write(tmp_path / "bad.jsonl", ['{"text": "Fine. Text."}', '{"topic": "weather"}'])
    with pytest.raises(DatasetError, match=r"line 2, field 'text': required field is missing"):
        load_neutral_text(path)
    empty = _write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(DatasetError, match="the dataset is empty"):
        load_neutral_text(empty)


def test_unknown_spec_names_the_builtins(tmp_path):
    with pytest.raises(
        DatasetError, match=r"unknown short-answer task 'shortanswer'.*short-answer"
    ):
        load_short_answer("shortanswer")
    with pytest.raises(DatasetError, match=r"unknown neutral text set .*neutral"):
        load_neutral_text(tmp_path / "missing.jsonl")


def test_schemas_refuse_empty_sets():
    with pytest.raises(ValueError, match="at least one question"):
        ShortAnswerTask(name="x", questions=[])
    with pytest.raises(ValueError, match="at least one passage"):
        NeutralText(name="x", passages=[])
    assert ShortAnswerQuestion(question="Q", answers=["H₂O"], category="science").answers == ["H₂O"]
