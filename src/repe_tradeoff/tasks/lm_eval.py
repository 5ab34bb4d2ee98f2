"""Helpfulness from a ``multiple_choice`` task of lm-evaluation-harness, answered by the sweep.

lm-eval builds the requests: its task registry, the task's templates, few-shot examples (with
lm-eval's default few-shot seed) and target delimiter. The sweep then scores every request at
every norm in one batched pass, where lm-eval's own ``steered`` model needs a run per norm.
Requests are tokenised as lm-eval's Hugging Face model does, so the per-option
log-likelihoods are the ones ``lm_eval --model steered`` computes.

Besides the records every multiple-choice task writes (``helpfulness``: P(correct) among the
options; ``accuracy``, which is lm-eval's ``acc``), an lm-eval task records ``accuracy_norm``:
lm-eval's ``acc_norm``, the argmax of log-likelihood divided by the option's length in
characters (``helpfulness_norm`` divides by bytes, which is lm-eval's ``acc_bytes``).

lm-eval is an optional extra: ``pip install 'repe-tradeoff[lm-eval]'``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repe_tradeoff.engine.scoring import Scores, TaskSequences
from repe_tradeoff.models.prompts import TaskError
from repe_tradeoff.tasks.choice import MultipleChoiceTask, data_hash

log = logging.getLogger(__name__)

LM_EVAL_EXTRA = "pip install 'repe-tradeoff[lm-eval]'"
#: lm-eval's default ``fewshot_random_seed``: few-shot contexts are the ones ``lm_eval`` builds.
FEWSHOT_SEED = 1234


@dataclass(frozen=True)
class LmEvalDoc:
    """One document's requests: option ``i`` is ``contexts[i] + continuations[i]``."""

    question: str  # the first context, shown where a question is shown
    choices: list[str]
    answer: int
    contexts: list[str]
    continuations: list[str]


def _task_manager_class():
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise TaskError(
            f"lm-eval tasks need lm-evaluation-harness, which is not installed: run `{LM_EVAL_EXTRA}`"
        ) from None
    return TaskManager


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _manager(task_name: str, include: Path | None):
    """A task manager that knows ``task_name``: the include folder alone when it has the task
    (indexing lm-eval's own few thousand task files takes many seconds), else everything."""
    TaskManager = _task_manager_class()
    if include is not None:
        if not include.is_dir():
            raise TaskError(f"lm-eval include folder {str(include)!r} does not exist; give a folder of task YAML files")
        local = TaskManager(include_path=str(include), include_defaults=False)
        if task_name in local.all_tasks:
            return local
    manager = TaskManager(include_path=str(include) if include else None)
    if task_name not in manager.all_tasks:
        close = difflib.get_close_matches(task_name, manager.all_subtasks, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        where = f" or in {include}" if include else "; give a folder of local task YAMLs with --lm-eval-include"
        raise TaskError(f"lm-eval has no task {task_name!r}{hint} among its own tasks{where}")
    return manager


def _load_task(task_name: str, include: Path | None):
    manager = _manager(task_name, include)
    try:
        tasks = manager.load([task_name])["tasks"]
    except Exception as err:  # noqa: BLE001  (lm-eval and datasets raise many kinds: all mean "cannot load this task")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TaskError(
            f"lm-eval could not load task {task_name!r}: {first}; check its dataset_path and data files "
            "(offline, the dataset must be cached already or be a local file)"
        ) from None
    if len(tasks) != 1:
        names = ", ".join(sorted(tasks)[:8]) + (" …" if len(tasks) > 8 else "")
        raise TaskError(f"lm-eval {task_name!r} is a group of {len(tasks)} tasks; name one of them: {names}")
    task = next(iter(tasks.values()))
    if task.OUTPUT_TYPE != "multiple_choice":
        raise TaskError(
            f"lm-eval task {task_name!r} is a {task.OUTPUT_TYPE} task; only multiple_choice tasks can be "
            "measured as helpfulness"
        )
    return task


def _gold(task, doc: dict, choices: list[str], name: str) -> int:
    """The correct option, resolved as lm-eval's multiple_choice ``process_results`` does."""
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, list):
        raise TaskError(f"lm-eval task {name!r} has several correct options per question, which is not supported")
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else -1
    if not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise TaskError(f"lm-eval task {name!r}: a document's target {gold!r} is not one of its {len(choices)} choices")
    return gold


def load_lm_eval_docs(task_name: str, include: str | Path | None = None,
                      num_fewshot: int | None = None) -> list[LmEvalDoc]:
    """The requests lm-eval builds for ``task_name``, one :class:`LmEvalDoc` per document.

    ``num_fewshot`` overrides the task's own setting unless the task fixes it at 0, as lm-eval does.
    """
    include = Path(include) if include else None
    task = _load_task(task_name, include)
    configured = task.get_config("num_fewshot")
    if num_fewshot is not None and configured != 0:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif configured is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=FEWSHOT_SEED)
    task.build_all_requests()
    by_doc: dict[int, list] = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance)
    docs = []
    for doc_id in sorted(by_doc):
        instances = sorted(by_doc[doc_id], key=lambda inst: inst.idx)
        doc = instances[0].doc
        choices = [str(c) for c in task.doc_to_choice(doc)]
        requests = [inst.args[:2] for inst in instances[: len(choices)]]  # acc_mutual_info's extra ones dropped
        docs.append(LmEvalDoc(question=requests[0][0], choices=choices, answer=_gold(task, doc, choices, task_name),
                              contexts=[c for c, _ in requests], continuations=[c for _, c in requests]))
    return docs


def _prefix_token_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _tok_encode(tokenizer, text: str) -> list[int]:
    """lm-eval's ``HFLM.tok_encode``: the tokenizer's own special tokens, unless the text already
    starts with the prefix token."""
    prefix = tokenizer.decode(_prefix_token_id(tokenizer))
    special = {"add_special_tokens": False} if prefix and text.startswith(prefix) else {}
    return list(tokenizer.encode(text, **special))


def encode_request(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a (context, continuation) request as lm-eval's causal ``loglikelihood`` makes
    them: trailing spaces of the context move to the continuation, the continuation's ids are
    those of the whole text past the context's, and an empty context becomes the prefix token."""
    if context == "":
        ids = list(tokenizer.encode(continuation, add_special_tokens=False))
        prefix = _prefix_token_id(tokenizer)
        return ([prefix], ids) if ids[0] != prefix else (ids[:1], ids[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation, context = context[-spaces:] + continuation, context[:-spaces]
    whole, head = _tok_encode(tokenizer, context + continuation), _tok_encode(tokenizer, context)
    return head, whole[len(head):]


@dataclass
class LmEvalTask(MultipleChoiceTask):
    """Helpfulness over the requests of an lm-eval ``multiple_choice`` task (see the module doc)."""

    lm_eval_task: str = ""
    include: str | None = None
    num_fewshot: int | None = None
    questions: list = field(default_factory=list)  # LmEvalDoc

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "n_items": self.n_items, "format": "lm-eval",
                "n_choices": self.n_choices, "template": "lm-eval",
                "sha256": data_hash(self.questions, "requests"),
                "lm_eval": {"task": self.lm_eval_task, "include": self.include, "num_fewshot": self.num_fewshot,
                            "fewshot_seed": FEWSHOT_SEED, "version": lm_eval_version()}}

    def sequences(self, tokenizer) -> TaskSequences:
        seqs = TaskSequences([], [])
        for i, doc in enumerate(self.questions):
            for context, continuation in zip(doc.contexts, doc.continuations):
                prompt, option = encode_request(tokenizer, context, continuation)
                seqs.prompts.append(prompt)
                seqs.continuations.append(option)
                seqs.owners.append(i)
        return seqs

    def records(self, scores: Scores, norms: Sequence[float], item_ids: Sequence[int]) -> list[dict]:
        out = super().records(scores, norms, item_ids)
        for rec in out:  # lm-eval's acc_norm: log-likelihood per character of the option
            doc = self.questions[rec["item"]]
            per_char = [s / len(c) if c else float("-inf") for s, c in zip(rec["scores"], doc.choices)]
            best = max(range(len(per_char)), key=per_char.__getitem__)
            rec["accuracy_norm"] = 1.0 if best == doc.answer else 0.0
        return out


def lm_eval_task(task_name: str, include: str | Path | None = None, num_fewshot: int | None = None) -> LmEvalTask:
    """The helpfulness task of lm-eval's ``task_name`` (found among lm-eval's tasks or in ``include``)."""
    docs = load_lm_eval_docs(task_name, include, num_fewshot)
    return LmEvalTask(name=f"lm-eval:{task_name}", questions=docs, lm_eval_task=task_name,
                      include=str(include) if include else None, num_fewshot=num_fewshot)


def lm_eval_spec_task(spec) -> LmEvalTask:
    """The task of a HelpfulnessSpec with ``lm_eval`` (``lm-eval:TASK``)."""
    return lm_eval_task(spec.lm_eval, spec.include, spec.num_fewshot)
