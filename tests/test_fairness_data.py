"""Tests of the built-in ``fairness`` behavior, computed from its JSONL files (no model needed).

The balance checks guard the forced-choice score against shortcuts: the scorer sums
log-likelihoods, so a side that is systematically shorter, or that always opens with the
same word, would be preferred for reasons that have nothing to do with stereotypes.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections import Counter

import pytest

from repe_tradeoff.data import BUILTIN_BEHAVIORS, Behavior, load_behavior

#: The social dimensions the dataset must cover (more are allowed).
REQUIRED_DIMENSIONS = {
    "gender",
    "race_ethnicity",
    "religion",
    "age",
    "disability",
    "nationality",
    "sexual_orientation",
    "socioeconomic_status",
}
#: Per-record bounds on len(aligned) / len(misaligned), in characters.
EVAL_RATIO_BOUNDS = (0.8, 1.25)
PAIR_RATIO_BOUNDS = (0.7, 1.43)  # of the two reply openings, the only part that differs
MEAN_RATIO_BOUNDS = (0.9, 1.1)
MAX_OPENING_SHARE = 0.15  # no first word on more than this share of either side
MIN_DIFFERENT_START = 0.9  # share of records whose two sides start with different words
MAX_PROMPT_OVERLAP = 0.5  # word-set Jaccard between any eval prompt and any pair request


def _raw(filename: str) -> list[dict]:
    resource = importlib.resources.files("repe_tradeoff.data").joinpath("builtin", filename)
    lines = resource.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _split_pair(text: str) -> tuple[str, str]:
    match = re.fullmatch(r"Request: (.+)\nResponse: (.+)", text, flags=re.DOTALL)
    assert match, text
    return match.group(1), match.group(2)


def _first_word(text: str) -> str:
    return re.findall(r"[a-z']+", text.lower())[0]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


@pytest.fixture(scope="module")
def fairness() -> Behavior:
    return load_behavior("fairness")


@pytest.fixture(scope="module")
def raw_pairs() -> list[dict]:
    return _raw("fairness_pairs.jsonl")


@pytest.fixture(scope="module")
def raw_items() -> list[dict]:
    return _raw("fairness_eval.jsonl")


@pytest.fixture(scope="module")
def eval_sides(raw_items: list[dict]) -> list[tuple[str, str]]:
    return [(r["aligned"], r["misaligned"]) for r in raw_items]


@pytest.fixture(scope="module")
def pair_sides(raw_pairs: list[dict]) -> list[tuple[str, str]]:
    return [(_split_pair(r["aligned"])[1], _split_pair(r["misaligned"])[1]) for r in raw_pairs]


def test_fairness_is_a_builtin_and_loads_like_the_others(fairness: Behavior) -> None:
    assert "fairness" in BUILTIN_BEHAVIORS
    assert fairness.name == "fairness"
    assert fairness.source == "builtin:fairness"
    assert len(fairness.pairs) >= 120
    assert len(fairness.items) >= 120
    assert re.fullmatch(r"[0-9a-f]{64}", fairness.sha256)


def test_loader_keeps_every_record_and_drops_only_the_dimension_tag(
    fairness: Behavior, raw_pairs: list[dict], raw_items: list[dict]
) -> None:
    assert [p.model_dump() for p in fairness.pairs] == [
        {"aligned": r["aligned"], "misaligned": r["misaligned"]} for r in raw_pairs
    ]
    assert [i.model_dump() for i in fairness.items] == [
        {k: r[k] for k in ("prompt", "aligned", "misaligned")} for r in raw_items
    ]
    for record in raw_pairs + raw_items:
        assert set(record) - {"prompt", "aligned", "misaligned"} == {"dimension"}, record


@pytest.mark.parametrize("filename", ["fairness_pairs.jsonl", "fairness_eval.jsonl"])
def test_dimensions_cover_at_least_eight_groups_with_ten_records_each(filename: str) -> None:
    counts = Counter(r["dimension"] for r in _raw(filename))
    assert REQUIRED_DIMENSIONS <= set(counts), sorted(REQUIRED_DIMENSIONS - set(counts))
    assert all(isinstance(d, str) and re.fullmatch(r"[a-z_]+", d) for d in counts)
    assert len(counts) >= 8
    assert min(counts.values()) >= 10, counts


def test_both_files_tag_the_same_dimensions(raw_pairs: list[dict], raw_items: list[dict]) -> None:
    assert {r["dimension"] for r in raw_pairs} == {r["dimension"] for r in raw_items}


def test_pairs_fix_the_request_and_vary_the_reply_opening(raw_pairs: list[dict]) -> None:
    aligned_openings, misaligned_openings = set(), set()
    for record in raw_pairs:
        request_a, reply_a = _split_pair(record["aligned"])
        request_m, reply_m = _split_pair(record["misaligned"])
        assert request_a == request_m, record
        aligned_openings.add(reply_a)
        misaligned_openings.add(reply_m)
    assert len(aligned_openings) >= 10
    assert len(misaligned_openings) >= 10
    assert not aligned_openings & misaligned_openings


def test_no_duplicate_prompts(raw_pairs: list[dict], raw_items: list[dict]) -> None:
    requests = [_norm(_split_pair(r["aligned"])[0]) for r in raw_pairs]
    prompts = [_norm(r["prompt"]) for r in raw_items]
    assert len(set(requests)) == len(requests)
    assert len(set(prompts)) == len(prompts)


def test_eval_prompts_are_distinct_from_the_pairs_requests(
    raw_pairs: list[dict], raw_items: list[dict]
) -> None:
    requests = [_split_pair(r["aligned"])[0] for r in raw_pairs]
    prompts = [r["prompt"] for r in raw_items]
    assert not {_norm(q) for q in requests} & {_norm(p) for p in prompts}
    for prompt in prompts:
        for request in requests:
            a, b = _words(prompt), _words(request)
            assert len(a & b) / len(a | b) <= MAX_PROMPT_OVERLAP, (prompt, request)


def _check_lengths(sides: list[tuple[str, str]], bounds: tuple[float, float]) -> None:
    low, high = bounds
    for aligned, misaligned in sides:
        assert low <= len(aligned) / len(misaligned) <= high, (aligned, misaligned)
    total_a = sum(len(a) for a, _ in sides)
    total_m = sum(len(m) for _, m in sides)
    assert MEAN_RATIO_BOUNDS[0] <= total_a / total_m <= MEAN_RATIO_BOUNDS[1]


def _check_openings(sides: list[tuple[str, str]]) -> None:
    different = sum(_first_word(a) != _first_word(m) for a, m in sides)
    assert different / len(sides) >= MIN_DIFFERENT_START
    for column in zip(*sides):
        word, count = Counter(_first_word(t) for t in column).most_common(1)[0]
        assert count / len(sides) <= MAX_OPENING_SHARE, (word, count)


def test_eval_responses_have_balanced_lengths(eval_sides: list[tuple[str, str]]) -> None:
    _check_lengths(eval_sides, EVAL_RATIO_BOUNDS)


def test_eval_responses_open_differently_and_variedly(eval_sides: list[tuple[str, str]]) -> None:
    _check_openings(eval_sides)


def test_pair_replies_have_balanced_lengths(pair_sides: list[tuple[str, str]]) -> None:
    _check_lengths(pair_sides, PAIR_RATIO_BOUNDS)


def test_pair_replies_open_differently_and_variedly(pair_sides: list[tuple[str, str]]) -> None:
    _check_openings(pair_sides)


def test_balance_checks_catch_a_skewed_side() -> None:
    # The checks above must be able to fail: a side padded by a third, or one opening word.
    skewed = [("Sure, " + a + " Indeed.", m) for a, m in [("x" * 40, "y" * 40)] * 20]
    with pytest.raises(AssertionError):
        _check_lengths(skewed, EVAL_RATIO_BOUNDS)
    with pytest.raises(AssertionError):
        _check_openings(skewed)
