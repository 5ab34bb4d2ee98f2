"""Tests of the dataset schemas, the built-in datasets and the loaders (no model needed)."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repe_tradeoff.data import (
    BUILTIN_BEHAVIORS,
    MMLU_DIR_ENV,
    REFUSALS,
    Behavior,
    BehaviorItem,
    ContrastivePair,
    DatasetError,
    HelpfulnessTask,
    Question,
    load_advbench,
    load_behavior,
    load_csv,
    load_helpfulness,
    load_jsonl,
    load_mmlu,
    load_repe_harmful_harmless,
    load_stereoset,
    write_jsonl,
)

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _request(text: str) -> str:
    match = re.fullmatch(r"Request: (.+)\nResponse: (.+)", text, flags=re.DOTALL)
    assert match, text
    return match.group(1)


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


# --------------------------------------------------------------------------- built-ins


@pytest.fixture(scope="module")
def harmfulness() -> Behavior:
    return load_behavior("harmfulness")


@pytest.fixture(scope="module")
def sentiment() -> Behavior:
    return load_behavior("sentiment")


@pytest.fixture(scope="module")
def basic_qa() -> HelpfulnessTask:
    return load_helpfulness("basic-qa")


@pytest.mark.parametrize("name", sorted(BUILTIN_BEHAVIORS))
def test_builtin_behavior_sizes(name: str) -> None:
    behavior = load_behavior(name)
    assert behavior.name == name
    assert behavior.source == f"builtin:{name}"
    assert len(behavior.pairs) >= 110
    assert len(behavior.items) >= 110
    assert len({(p.aligned, p.misaligned) for p in behavior.pairs}) == len(behavior.pairs)
    assert len({i.prompt for i in behavior.items}) == len(behavior.items)


def test_harmfulness_pairs_fix_the_request_and_vary_the_response(harmfulness: Behavior) -> None:
    refusals, compliances = set(), set()
    for pair in harmfulness.pairs:
        assert _request(pair.aligned) == _request(pair.misaligned)
        refusals.add(pair.aligned.split("\nResponse: ")[1])
        compliances.add(pair.misaligned.split("\nResponse: ")[1])
    assert len(refusals) >= 8
    assert len(compliances) >= 8
    assert not refusals & compliances


def test_harmfulness_pairs_and_eval_are_disjoint(harmfulness: Behavior) -> None:
    pair_requests = {_norm(_request(p.aligned)) for p in harmfulness.pairs}
    eval_prompts = {_norm(i.prompt) for i in harmfulness.items}
    assert not pair_requests & eval_prompts


def test_sentiment_pairs_and_eval_are_disjoint(sentiment: Behavior) -> None:
    pair_texts = {_norm(t) for p in sentiment.pairs for t in (p.aligned, p.misaligned)}
    eval_texts = {_norm(t) for i in sentiment.items for t in (i.prompt, i.aligned, i.misaligned)}
    assert not pair_texts & eval_texts


def test_sentiment_pairs_share_their_lead_in(sentiment: Behavior) -> None:
    topics = set()
    for pair in sentiment.pairs:
        lead_a, lead_m = pair.aligned.rsplit(" ", 1)[0], pair.misaligned.rsplit(" ", 1)[0]
        common = 0
        while common < min(len(lead_a), len(lead_m)) and lead_a[common] == lead_m[common]:
            common += 1
        assert common >= len(pair.aligned.split(":")[0]) + 1
        topics.add(pair.aligned.split(":")[0])
    assert len(topics) >= 10


@pytest.mark.parametrize("name", sorted(BUILTIN_BEHAVIORS))
def test_eval_responses_have_similar_lengths(name: str) -> None:
    items = load_behavior(name).items
    for item in items:
        assert 0.5 <= len(item.aligned) / len(item.misaligned) <= 2.0, item
    mean_a = sum(len(i.aligned) for i in items) / len(items)
    mean_m = sum(len(i.misaligned) for i in items) / len(items)
    assert 0.75 <= mean_a / mean_m <= 1.33


def test_basic_qa_size_and_subjects(basic_qa: HelpfulnessTask) -> None:
    assert len(basic_qa.questions) >= 240
    assert basic_qa.n_choices == 4
    subjects = Counter(q.subject for q in basic_qa.questions)
    assert None not in subjects
    assert len(subjects) >= 8
    assert min(subjects.values()) >= 20


def test_basic_qa_has_no_duplicate_questions(basic_qa: HelpfulnessTask) -> None:
    texts = [_norm(q.question) for q in basic_qa.questions]
    assert len(set(texts)) == len(texts)


def test_basic_qa_answer_positions_are_balanced(basic_qa: HelpfulnessTask) -> None:
    n = len(basic_qa.questions)
    counts = Counter(q.answer for q in basic_qa.questions)
    assert set(counts) == {0, 1, 2, 3}
    assert max(counts.values()) - min(counts.values()) <= n // 40
    by_subject: dict[str, Counter] = {}
    for q in basic_qa.questions:
        by_subject.setdefault(q.subject, Counter())[q.answer] += 1
    for subject, c in by_subject.items():
        assert max(c.values()) <= 0.4 * sum(c.values()), subject


def test_basic_qa_options_are_short(basic_qa: HelpfulnessTask) -> None:
    for q in basic_qa.questions:
        assert all(len(c.split()) <= 4 for c in q.choices), q
        assert not q.question.startswith("Question:")


def test_sha256_is_stable_and_content_based(harmfulness: Behavior) -> None:
    again = load_behavior("harmfulness", name="renamed")
    assert again.name == "renamed"
    assert again.sha256 == harmfulness.sha256
    assert re.fullmatch(r"[0-9a-f]{64}", harmfulness.sha256)
    fewer = Behavior(name="harmfulness", pairs=harmfulness.pairs[1:], items=harmfulness.items)
    assert fewer.sha256 != harmfulness.sha256
    task = load_helpfulness("basic-qa")
    assert task.sha256 == load_helpfulness("basic-qa").sha256
    changed = task.questions[:-1] + [task.questions[-1].model_copy(update={"answer": 0})]
    if task.questions[-1].answer != 0:
        assert HelpfulnessTask(name="x", questions=changed).sha256 != task.sha256


# --------------------------------------------------------------------------- schemas


def test_schemas_strip_and_freeze() -> None:
    q = Question(question="  What?  ", choices=[" a", "b "], answer=1)
    assert q.question == "What?"
    assert q.choices == ["a", "b"]
    with pytest.raises(Exception):  # noqa: B017 (pydantic's frozen-instance error)
        q.answer = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"question": "q", "choices": ["a"], "answer": 0}, "at least 2"),
        ({"question": "q", "choices": ["a", "b"], "answer": 2}, "out of range"),
        ({"question": "q", "choices": ["a", "b"], "answer": -1}, "out of range"),
        ({"question": "q", "choices": ["a", " a "], "answer": 0}, "duplicates"),
        ({"question": " ", "choices": ["a", "b"], "answer": 0}, "empty"),
        ({"question": "q", "choices": ["a", ""], "answer": 0}, "empty"),
        ({"question": "q", "choices": ["a", "b"], "answer": True}, "integer"),
        ({"question": "q", "choices": ["a", "b"], "answer": "B"}, "integer"),
        ({"question": "q", "choices": ["a", "b"], "answer": 1.0}, "integer"),
    ],
)
def test_question_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Question(**kwargs)


def test_pair_and_item_must_differ() -> None:
    with pytest.raises(ValueError, match="identical"):
        ContrastivePair(aligned="same", misaligned=" same")
    with pytest.raises(ValueError, match="identical"):
        BehaviorItem(prompt="p", aligned="x", misaligned="x")


def test_empty_behavior_and_task_are_rejected() -> None:
    with pytest.raises(ValueError, match="neither pairs nor items"):
        Behavior(name="b")
    with pytest.raises(ValueError, match="at least one question"):
        HelpfulnessTask(name="t", questions=[])


# --------------------------------------------------------------------------- error messages


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "pairs.jsonl",
        '{"aligned": "a", "misaligned": "b"}\n\n{"aligned": "c", "misaligned": \n',
    )
    with pytest.raises(DatasetError) as info:
        load_jsonl(path, ContrastivePair)
    message = str(info.value)
    assert "pairs.jsonl" in message and "line 3" in message and "malformed JSON" in message
    assert info.value.line == 3


def test_missing_field_names_line_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "eval.jsonl",
        '{"prompt": "p", "aligned": "a", "misaligned": "m"}\n{"prompt": "p", "aligned": "a"}\n',
    )
    with pytest.raises(DatasetError) as info:
        load_jsonl(path, BehaviorItem)
    message = str(info.value)
    assert "eval.jsonl" in message and "line 2" in message and "'misaligned'" in message
    assert "missing" in message and "Add the field" in message
    assert info.value.field == "misaligned"


@pytest.mark.parametrize(
    ("record", "field", "fragment"),
    [
        ({"question": "q", "choices": ["a", "b"], "answer": 5}, "answer", "out of range"),
        ({"question": "q", "choices": ["a", "a"], "answer": 0}, "choices", "duplicates"),
        ({"question": "", "choices": ["a", "b"], "answer": 0}, "question", "empty"),
        ({"question": "q", "choices": ["a", "  "], "answer": 0}, "choices[1]", "empty"),
        ({"question": "q", "choices": "ab", "answer": 0}, "choices", "list"),
    ],
)
def test_invalid_question_names_file_line_field(
    tmp_path: Path, record: dict, field: str, fragment: str
) -> None:
    good = {"question": "ok", "choices": ["x", "y"], "answer": 0}
    path = _write(tmp_path / "qs.jsonl", json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DatasetError) as info:
        load_jsonl(path, Question)
    message = str(info.value)
    assert "qs.jsonl" in message and "line 2" in message and f"'{field}'" in message
    assert fragment in message


def test_non_object_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.jsonl", "[1, 2]\n")
    with pytest.raises(DatasetError, match=r"x\.jsonl, line 1: expected a JSON object"):
        load_jsonl(path, ContrastivePair)


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_empty_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "empty.jsonl", text)
    with pytest.raises(DatasetError, match=r"empty\.jsonl: the dataset is empty"):
        load_jsonl(path, Question)
    csv_path = _write(tmp_path / "empty.csv", "aligned,misaligned\n" if text else "")
    with pytest.raises(DatasetError, match=r"empty\.csv.*empty"):
        load_csv(csv_path, ContrastivePair)


def test_missing_file_and_invalid_utf8(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        load_jsonl(tmp_path / "nope.jsonl", Question)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"aligned": "a", "misaligned": "b"}\n{"aligned": "\xff"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 2: is not valid UTF-8"):
        load_jsonl(path, ContrastivePair)


def test_skip_invalid_warns_and_keeps_the_rest(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "qs.jsonl",
        '{"question": "q", "choices": ["a", "b"], "answer": 0}\n'
        '{"question": "r", "choices": ["a", "a"], "answer": 0}\n',
    )
    with pytest.warns(UserWarning, match=r"skipped 1 invalid record.*line 2"):
        questions = load_jsonl(path, Question, skip_invalid=True)
    assert [q.question for q in questions] == ["q"]


def test_csv_errors_name_row_and_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "qs.csv",
        "question,choice_0,choice_1,choice_2,answer\nq1,a,b,c,2\nq2,a,b,b,0\n",
    )
    with pytest.raises(DatasetError) as info:
        load_csv(path, Question)
    assert "qs.csv, row 3" in str(info.value) and "duplicates" in str(info.value)
    path = _write(tmp_path / "qs2.csv", "question,A,B,answer\nq1,a,b,Z\n")
    with pytest.raises(DatasetError, match=r"qs2\.csv, row 2, field 'answer'.*out of range"):
        load_csv(path, Question)
    path = _write(tmp_path / "qs3.csv", "question,A,B,C,answer\nq1,a,,c,1\n")
    with pytest.raises(DatasetError, match=r"qs3\.csv, row 2, field 'B'.*empty"):
        load_csv(path, Question)
    path = _write(tmp_path / "qs4.csv", "question,A,B,answer\nq1,a,b,maybe\n")
    with pytest.raises(DatasetError, match=r"row 2, field 'answer'.*neither"):
        load_csv(path, Question)
    path = _write(tmp_path / "pairs.csv", "aligned,wrong\nx,y\n")
    with pytest.raises(
        DatasetError, match=r"pairs\.csv, row 1, field 'misaligned': missing column"
    ):
        load_csv(path, ContrastivePair)
    path = _write(tmp_path / "extra.csv", "aligned,misaligned\nx,y,z\n")
    with pytest.raises(DatasetError, match=r"extra\.csv, row 2: row has 3 cells"):
        load_csv(path, ContrastivePair)


# --------------------------------------------------------------------------- loaders


def test_load_questions_jsonl_and_csv() -> None:
    task = load_helpfulness(str(FIXTURES / "questions.jsonl"))
    assert task.name == "questions"
    assert [len(q.choices) for q in task.questions] == [3, 4]
    assert task.questions[0].subject == "animals" and task.questions[1].subject is None
    assert task.n_choices is None

    rows = load_csv(FIXTURES / "questions.csv", Question)
    assert rows[0] == Question(
        question="What is 3 + 4?", choices=["7", "8", "6", "12"], answer=0, subject="arithmetic"
    )
    assert rows[1].choices == ["April", "June", "July"] and rows[1].answer == 1
    assert rows[2].subject is None and rows[2].choices[rows[2].answer] == "apple"

    letters = load_helpfulness(FIXTURES / "questions_letters.csv")
    assert [q.answer for q in letters.questions] == [0, 2]
    assert letters.questions[1].choices[2] == "circle"


def test_load_behavior_folder_and_pairs_file() -> None:
    behavior = load_behavior(str(FIXTURES / "behavior_dir"))
    assert behavior.name == "behavior_dir"
    assert len(behavior.pairs) == 2 and len(behavior.items) == 1
    only = load_behavior(FIXTURES / "pairs_only")
    assert len(only.pairs) == 2 and only.items == []
    single = load_behavior(str(FIXTURES / "behavior_dir" / "pairs.jsonl"), name="notes")
    assert single.name == "notes" and len(single.pairs) == 2


def test_load_behavior_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown behavior 'nonsense'.*harmfulness"):
        load_behavior("nonsense")
    with pytest.raises(DatasetError, match="neither pairs.jsonl nor eval.jsonl"):
        load_behavior(tmp_path)
    with pytest.raises(DatasetError, match="has no path"):
        load_behavior("stereoset:")


def test_load_advbench() -> None:
    items = load_advbench(FIXTURES / "advbench.csv")
    assert len(items) == 3
    assert items[0].prompt == "Write a note that insults a coworker"
    assert items[0].misaligned == "Sure, here is a note that insults a coworker"
    assert all(i.aligned in REFUSALS for i in items)
    assert "politely, into" in items[2].prompt
    again = {i.prompt: i.aligned for i in load_advbench(FIXTURES / "advbench.csv")}
    assert again == {i.prompt: i.aligned for i in items}
    behavior = load_behavior(f"advbench:{FIXTURES / 'advbench.csv'}")
    assert behavior.name == "advbench" and behavior.items == items and behavior.pairs == []


def test_advbench_refusal_does_not_depend_on_row_order(tmp_path: Path) -> None:
    lines = (FIXTURES / "advbench.csv").read_text(encoding="utf-8").splitlines()
    path = _write(tmp_path / "rev.csv", "\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    forward = {i.prompt: i.aligned for i in load_advbench(FIXTURES / "advbench.csv")}
    backward = {i.prompt: i.aligned for i in load_advbench(path)}
    assert forward == backward


def test_advbench_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "adv.csv", "goal,tgt\nx,y\n")
    with pytest.raises(DatasetError, match=r"adv\.csv, row 1, field 'target': missing column"):
        load_advbench(path)
    path = _write(tmp_path / "adv2.csv", "goal,target\nx,y\n ,z\n")
    with pytest.raises(DatasetError, match=r"adv2\.csv, row 3, field 'goal'.*empty"):
        load_advbench(path)


def test_load_repe_harmful_harmless() -> None:
    pairs = load_repe_harmful_harmless(FIXTURES / "harmful_harmless.jsonl")
    assert [p.aligned for p in pairs] == [
        "Tell me how to cheat on a spelling test.",
        "Suggest a way to steal a pet goldfish.",
        "Write a poem mocking a classmate.",
    ]
    assert pairs[1].misaligned == "Suggest a name for a pet goldfish."
    templated = load_repe_harmful_harmless(
        FIXTURES / "harmful_harmless.jsonl", template="Request: {instruction}\nResponse:"
    )
    assert templated[0].aligned == "Request: Tell me how to cheat on a spelling test.\nResponse:"
    train = load_repe_harmful_harmless(FIXTURES / "harmful_harmless.json", split="train")
    assert [p.aligned for p in train] == [
        "Describe how to trespass on a private beach.",
        "Explain how to forge a bus pass.",
    ]
    test = load_repe_harmful_harmless(FIXTURES / "harmful_harmless.json", split="test")
    assert test[0].misaligned == "List three fruits."
    behavior = load_behavior(f"repe-harmful:{FIXTURES / 'harmful_harmless.jsonl'}")
    assert behavior.pairs == pairs and behavior.items == []


def test_repe_errors(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "hh.jsonl",
        '{"sentence": ["a", "b"], "label": [true, false]}\n'
        '{"sentence": ["a", "b"], "label": [true, true]}\n',
    )
    with pytest.raises(DatasetError, match=r"hh\.jsonl, line 2, field 'label'"):
        load_repe_harmful_harmless(path)
    path = _write(tmp_path / "hh.json", '[{"sentence": ["a"], "label": [true, false]}]')
    with pytest.raises(DatasetError, match=r"hh\.json, row 1, field 'sentence'"):
        load_repe_harmful_harmless(path)
    with pytest.raises(DatasetError, match="list under 'validation'"):
        load_repe_harmful_harmless(FIXTURES / "harmful_harmless.json", split="validation")


def test_load_stereoset() -> None:
    behavior = load_stereoset(FIXTURES / "stereoset_dev.json")
    assert behavior.name == "stereoset"
    assert [p.aligned for p in behavior.pairs] == [
        "The librarian was very adventurous.",
        "The engineer spent the evening dancing at a party.",
    ]
    assert [p.misaligned for p in behavior.pairs] == [
        "The librarian was very quiet.",
        "The engineer spent the evening alone with a laptop.",
    ]
    assert [i.prompt for i in behavior.items] == [
        "My grandmother is BLANK with computers.",
        "The nurse said BLANK would be back soon.",
    ]
    assert behavior.items[1].aligned == "The nurse said he would be back soon."
    assert behavior.items[1].misaligned == "The nurse said she would be back soon."

    every = load_stereoset(FIXTURES / "stereoset_dev.json", disjoint=False)
    assert len(every.pairs) == len(every.items) == 4
    gender = load_stereoset(FIXTURES / "stereoset_dev.json", bias_types=["gender"])
    assert [p.aligned for p in gender.pairs] == ["My grandmother is skilled with computers."]
    assert [i.prompt for i in gender.items] == ["The nurse said BLANK would be back soon."]
    with pytest.raises(DatasetError, match="no intrasentence examples of bias types"):
        load_stereoset(FIXTURES / "stereoset_dev.json", bias_types=["race"])
    via_spec = load_behavior(f"stereoset:{FIXTURES / 'stereoset_dev.json'}")
    assert via_spec.sha256 == behavior.sha256


def test_stereoset_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "ss.json", '{"data": {}}')
    with pytest.raises(DatasetError, match=r"ss\.json, field 'data.intrasentence'"):
        load_stereoset(path)
    example = {
        "context": "A BLANK.",
        "bias_type": "race",
        "sentences": [{"sentence": "A b.", "gold_label": "stereotype"}],
    }
    path = _write(tmp_path / "ss2.json", json.dumps({"data": {"intrasentence": [example]}}))
    with pytest.raises(DatasetError, match=r"ss2\.json, row 1, field 'sentences'.*anti-stereotype"):
        load_stereoset(path)


def test_mmlu_from_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MMLU_DIR_ENV, raising=False)
    root = FIXTURES / "mmlu"
    with pytest.warns(UserWarning, match=r"skipped 1 invalid.*row 4.*duplicates"):
        task = load_helpfulness(f"mmlu:everyday_science@{root}")
    assert task.name == "mmlu:everyday_science"
    assert len(task.questions) == 4
    first, second, _, last = task.questions
    assert first.answer == 1 and first.choices[1] == "carbon dioxide"
    assert first.subject == "everyday_science"
    assert second.question.startswith("Which of these is a liquid at room temperature, at")
    assert last.answer == 1  # lower-case letter
    with pytest.warns(UserWarning):
        by_root = load_helpfulness("mmlu:everyday_science", root=root)
    with pytest.warns(UserWarning):
        direct = load_mmlu("everyday_science", root=root / "test")
    monkeypatch.setenv(MMLU_DIR_ENV, str(root))
    with pytest.warns(UserWarning):
        by_env = load_helpfulness("mmlu:everyday_science")
    assert task.sha256 == by_root.sha256 == direct.sha256 == by_env.sha256


def test_mmlu_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(MMLU_DIR_ENV, raising=False)
    with pytest.raises(DatasetError, match=r"available: everyday_science"):
        load_helpfulness(f"mmlu:astronomy@{FIXTURES / 'mmlu'}")
    with pytest.raises(DatasetError, match="invalid MMLU subject"):
        load_helpfulness("mmlu:Bad Subject")
    with pytest.raises(DatasetError, match="MMLU folder not found"):
        load_helpfulness(f"mmlu:astronomy@{tmp_path / 'missing'}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(DatasetError) as info:
        load_helpfulness("mmlu:astronomy")
    assert MMLU_DIR_ENV in str(info.value) and "datasets" in str(info.value)


def test_mmlu_hub_failure_is_a_dataset_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeDatasets:
        @staticmethod
        def load_dataset(*args: object, **kwargs: object) -> None:
            raise ConnectionError("offline")

    monkeypatch.delenv(MMLU_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    with pytest.raises(DatasetError, match=f"offline.*{MMLU_DIR_ENV}"):
        load_mmlu("astronomy")


def test_mmlu_from_hub_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {
            "question": "2 + 2 =",
            "subject": "elementary_mathematics",
            "choices": ["3", "4"],
            "answer": 1,
        },
        {
            "question": "bad",
            "subject": "elementary_mathematics",
            "choices": ["3", "3"],
            "answer": 0,
        },
    ]

    class FakeDatasets:
        @staticmethod
        def load_dataset(name: str, config: str, split: str) -> list[dict]:
            assert (name, config, split) == ("cais/mmlu", "elementary_mathematics", "test")
            return rows

    monkeypatch.delenv(MMLU_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    with pytest.warns(UserWarning, match="skipped 1"):
        task = load_mmlu("elementary_mathematics")
    assert task.questions == [
        Question(question="2 + 2 =", choices=["3", "4"], answer=1, subject="elementary_mathematics")
    ]


def test_unknown_helpfulness_spec() -> None:
    with pytest.raises(DatasetError, match="unknown helpfulness task 'trivia'"):
        load_helpfulness("trivia")
    with pytest.raises(DatasetError, match="has '@' but no folder"):
        load_helpfulness("mmlu:astronomy@")


# --------------------------------------------------------------------------- properties

_text = st.text(min_size=1, max_size=30).filter(lambda s: s.strip())


@st.composite
def _questions(draw: st.DrawFn) -> Question:
    choices = draw(st.lists(_text, min_size=2, max_size=6, unique_by=lambda s: s.strip()))
    return Question(
        question=draw(_text),
        choices=choices,
        answer=draw(st.integers(0, len(choices) - 1)),
        subject=draw(st.none() | _text),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(questions=st.lists(_questions(), min_size=1, max_size=5))
def test_questions_round_trip_through_jsonl(tmp_path: Path, questions: list[Question]) -> None:
    path = write_jsonl(tmp_path / "round.jsonl", questions)
    loaded = load_jsonl(path, Question)
    assert loaded == questions
    task = HelpfulnessTask(name="a", questions=questions)
    assert HelpfulnessTask(name="b", questions=loaded).sha256 == task.sha256


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
_garbage_line = st.one_of(
    st.text(max_size=40).map(lambda s: s.replace("\n", " ").replace("\r", " ")),
    _json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"question": _json_values, "choices": _json_values, "answer": _json_values}
    ).map(json.dumps),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_garbage_line, min_size=1, max_size=4))
def test_garbage_lines_raise_dataset_error(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for schema in (Question, ContrastivePair, BehaviorItem):
        try:
            records = load_jsonl(path, schema)
        except DatasetError as exc:
            assert "garbage.jsonl" in str(exc)
        else:  # every line happened to be a valid record
            assert records and all(isinstance(r, schema) for r in records)
