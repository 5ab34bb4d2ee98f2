"""The task registry: a new kind of task is one factory and one registry line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from repe_tradeoff.tasks import registry
from repe_tradeoff.tasks.choice import MultipleChoiceTask
from repe_tradeoff.workflows.prepare import build_tasks
from repe_tradeoff.workflows.settings import SweepSettings

BUILT: list = []


def echo_task(spec):
    """A factory of a kind registered only in this test: records the spec it was given."""
    BUILT.append(spec)
    from repe_tradeoff.data import load_helpfulness

    task = load_helpfulness("basic-qa")
    return MultipleChoiceTask(f"echo-{spec.spec.partition(':')[2]}", list(task.questions)[:3], spec.format, spec.template)


def test_a_registered_kind_is_built_by_its_factory(monkeypatch):
    monkeypatch.setitem(registry._KINDS, "echo", registry.TaskKind("echo", f"{__name__}:echo_task", "test"))
    BUILT.clear()
    tasks = build_tasks(SweepSettings(helpfulness=["echo:abc", "basic-qa"], norms="-1,0,1"))
    assert [t.name for t in tasks] == ["echo-abc", "basic-qa"]
    assert [s.spec for s in BUILT] == ["echo:abc"]
    assert tasks[0].n_items == 3


@pytest.mark.parametrize(("spec", "kind"), [
    ("basic-qa", registry.MULTIPLE_CHOICE), ("mmlu:anatomy", "mmlu"), ("short-answer", "short-answer"),
    ("short-answer:my.jsonl", "short-answer"), ("data/questions.jsonl", registry.MULTIPLE_CHOICE),
    ("./q:1.jsonl", registry.MULTIPLE_CHOICE),
])
def test_kind_of_a_spec(spec, kind):
    assert registry.kind_of(spec) == kind


@pytest.mark.parametrize(("spec", "meant"), [("lm_eval:arc_easy", "lm-eval"), ("short_answer:x.jsonl", "short-answer"),
                                             ("mmlu_:anatomy", "mmlu")])
def test_a_misspelt_kind_is_refused_with_the_kind_meant(spec, meant):
    with pytest.raises(ValidationError, match=f"did you mean '{meant}'"):
        SweepSettings(helpfulness=[spec], norms="-1,0,1")


def test_every_builtin_kind_has_an_importable_factory():
    import importlib

    for kind in registry.task_kinds().values():
        module, _, function = kind.factory.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), kind.name
