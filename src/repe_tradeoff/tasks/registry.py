"""The registry of helpfulness task kinds: which kind a spec names, and the factory that builds it.

A spec names its kind by a prefix (``lm-eval:arc_easy``, ``short-answer:FILE``, ``mmlu:anatomy``) or
is a built-in name or a file of questions, which are multiple choice. A new kind of task is one
module with a factory ``(spec) -> Task`` and one :func:`register_task` line (or one entry below);
settings, the CLI and the sweep find it here. Factories are ``module:function`` strings, imported
only when a spec of their kind is built, so listing a kind costs nothing.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repe_tradeoff.errors import RepeTradeoffError

if TYPE_CHECKING:
    from repe_tradeoff.tasks.choice import Task


class UnknownTaskKind(RepeTradeoffError):
    """A spec whose ``KIND:`` prefix names no registered kind."""


@dataclass(frozen=True)
class TaskKind:
    """One kind of helpfulness task: its spec prefix, its factory and a line of help."""

    name: str
    factory: str  # "module:function" taking the spec (a HelpfulnessSpec) and returning a Task
    help: str

    def build(self, spec: Any) -> Task:
        module, _, function = self.factory.partition(":")
        return getattr(importlib.import_module(module), function)(spec)


#: The kind of specs with no registered prefix: built-in names, ``mmlu:SUBJECT`` and files.
MULTIPLE_CHOICE = "multiple-choice"

_KINDS: dict[str, TaskKind] = {}


def register_task(name: str, factory: str, help: str) -> TaskKind:
    """Add a kind of task: specs ``NAME`` and ``NAME:ARGUMENT`` are built by ``factory``."""
    kind = TaskKind(name, factory, help)
    _KINDS[name] = kind
    return kind


register_task(MULTIPLE_CHOICE, "repe_tradeoff.tasks.choice:multiple_choice_task",
              "basic-qa, mmlu:SUBJECT[@FOLDER], or a JSONL/CSV file of questions: P(correct answer)")
register_task("mmlu", "repe_tradeoff.tasks.choice:multiple_choice_task",
              "mmlu:SUBJECT[@FOLDER]: an MMLU subject's test questions")
register_task("short-answer", "repe_tradeoff.tasks.text:short_answer_task",
              "short-answer[:FILE.jsonl]: exact match of a greedy generated answer")
register_task("lm-eval", "repe_tradeoff.tasks.lm_eval:lm_eval_spec_task",
              "lm-eval:TASK: a multiple_choice task of lm-evaluation-harness")


def task_kinds() -> dict[str, TaskKind]:
    """Every registered kind, by name."""
    return dict(_KINDS)


def kind_of(text: str) -> str:
    """The registered kind a spec string names (its prefix), else multiple choice.

    Raises :class:`UnknownTaskKind` for a ``KIND:…`` prefix close to a registered one
    (``lm_eval:arc_easy``), naming the kind it probably meant."""
    head, sep, _ = text.partition(":")
    if head in _KINDS:
        return head
    if sep and head and "/" not in head and "\\" not in head:
        close = difflib.get_close_matches(head, list(_KINDS), n=1, cutoff=0.6)
        if close:
            raise UnknownTaskKind(f"unknown kind of task {head!r} in {text!r}: did you mean "
                                  f"{close[0]!r}? (kinds: {', '.join(_KINDS)})")
    return MULTIPLE_CHOICE


def build_task(spec: Any) -> Task:
    """The task of a helpfulness spec (a :class:`~repe_tradeoff.workflows.settings.HelpfulnessSpec`)."""
    kind = "lm-eval" if getattr(spec, "lm_eval", None) is not None else kind_of(spec.spec)
    return _KINDS[kind].build(spec)
