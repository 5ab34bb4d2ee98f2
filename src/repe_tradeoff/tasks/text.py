"""Tasks measured on generated or plain text, beside those of :mod:`repe_tradeoff.tasks.choice`.

* :class:`ExactMatchTask` (helpfulness): greedy steered answers to short-answer questions,
  scored by :func:`~repe_tradeoff.data.answers.exact_match`; ``exact_match`` and the answer's
  length ``generated_tokens``.
* :class:`FluencyTask` (kind ``fluency``): on neutral passages, ``kl``, the mean over positions
  of KL(P_0 ‖ P_r) of next-token distributions (forward only), and ``perplexity``, that of the
  unsteered model on the steered model's greedy continuation of the passage.

Both follow the task protocol (:class:`repe_tradeoff.tasks.choice.Task`): items, ``describe()`` and
``score_items(runner, item_ids)``, every norm of the grid batched in one call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from repe_tradeoff.data.answers import exact_match
from repe_tradeoff.engine.scoring import TaskSequences
from repe_tradeoff.models.prompts import encode
from repe_tradeoff.tasks.choice import _sig, _with_instruction, data_hash, instructed

if TYPE_CHECKING:
    from repe_tradeoff.engine.batching import ChunkRunner

#: tokens generated per answer: a short answer fits, and only its first sentence is judged
ANSWER_TOKENS = 24
#: tokens of each steered continuation of a neutral passage
CONTINUATION_TOKENS = 24


@dataclass
class ExactMatchTask:
    """Helpfulness as the share of short-answer questions answered correctly in free generation."""

    name: str
    questions: list  # ShortAnswerQuestion: question, answers, category
    template: str = "auto"
    max_new_tokens: int = ANSWER_TOKENS
    kind: str = "helpfulness"
    scorer: str = "exact-match"
    instruction: str | None = None  # the prompting baseline's, written before each question

    @property
    def n_items(self) -> int:
        return len(self.questions)

    def describe(self) -> dict:
        return _with_instruction({"name": self.name, "kind": self.kind, "n_items": self.n_items,
                                  "scorer": self.scorer, "template": self.template,
                                  "max_new_tokens": self.max_new_tokens,
                                  "sha256": data_hash(self.questions, "questions")}, self.instruction)

    def score_items(self, runner: ChunkRunner, item_ids: Sequence[int]) -> list[dict]:
        questions = [self.questions[i] for i in item_ids]
        gen = runner.generate([instructed(self.instruction, q.question) for q in questions], self.template,
                              self.max_new_tokens)
        return [{"task": self.name, "kind": self.kind, "norm": r, "item": item,
                 "exact_match": 1.0 if exact_match(gen.texts[j][k], q.answers) else 0.0,
                 "generated_tokens": gen.lengths[j][k], "response": gen.texts[j][k]}
                for k, r in enumerate(runner.norms) for j, (item, q) in enumerate(zip(item_ids, questions))]


@dataclass
class FluencyTask:
    """What steering costs on ordinary text: ``kl`` and ``perplexity`` on neutral passages.

    ``perplexity`` = exp(−mean log p_0(token)) over the steered continuation's tokens (an
    end-of-sequence token it generated included; None when it generated nothing), where p_0 is
    the unsteered model reading the passage and then the continuation.
    """

    name: str
    passages: list  # NeutralPassage: text, topic
    max_new_tokens: int = CONTINUATION_TOKENS
    kind: str = "fluency"
    continuations: bool = True  # False: kl only (the sequential plan generates at a few norms afterwards)

    @property
    def n_items(self) -> int:
        return len(self.passages)

    def describe(self) -> dict:
        described = {"name": self.name, "kind": self.kind, "n_items": self.n_items, "template": "none",
                     "max_new_tokens": self.max_new_tokens, "sha256": data_hash(self.passages, "passages")}
        return described if self.continuations else {**described, "continuations": "selected norms"}

    def score_items(self, runner: ChunkRunner, item_ids: Sequence[int]) -> list[dict]:
        texts = [self.passages[i].text for i in item_ids]
        kl = runner.next_token_kl([encode(runner.tokenizer, t, special=True) for t in texts])
        continued = self.continue_items(runner, item_ids) if self.continuations else None
        out = []
        for k, r in enumerate(runner.norms):
            for j, item in enumerate(item_ids):
                rest = continued[k * len(item_ids) + j] if continued else {}
                out.append({"task": self.name, "kind": self.kind, "norm": r, "item": item,
                            "kl": _sig(max(0.0, float(kl[j, k]))), "perplexity": None, "generated_tokens": None,
                            "response": None, **rest})
        return out

    def continue_items(self, runner: ChunkRunner, item_ids: Sequence[int]) -> list[dict]:
        """The continuation half alone (no ``kl``): ``perplexity``, ``generated_tokens`` and
        ``response`` per norm × item (norm-major, as :meth:`score_items`' records)."""
        texts = [self.passages[i].text for i in item_ids]
        gen = runner.generate(texts, "none", self.max_new_tokens)
        norms = runner.norms
        seqs = TaskSequences([], [])
        for j in range(len(item_ids)):
            for k in range(len(norms)):
                seqs.prompts.append(gen.prompt_ids[j])
                seqs.continuations.append(gen.new_ids[j][k])
                seqs.owners.append(j)
        scored = runner.score_unsteered(seqs, list(range(len(seqs.prompts)))).continuation[:, 0]
        out = []
        for k in range(len(norms)):
            for j in range(len(item_ids)):
                s = j * len(norms) + k
                n = len(seqs.continuations[s])
                ppl = _sig(math.exp(min(-float(scored[s]) / n, 700.0))) if n else None
                out.append({"perplexity": ppl, "generated_tokens": gen.lengths[j][k], "response": gen.texts[j][k]})
        return out


def short_answer_task(spec) -> ExactMatchTask:
    """The exact-match task of ``short-answer`` or ``short-answer:FILE.jsonl`` (a HelpfulnessSpec)."""
    from repe_tradeoff.data import DatasetError, load_short_answer

    _, sep, path = spec.spec.partition(":")
    if sep and not path:
        raise DatasetError(f"spec {spec.spec!r} names no file",
                           hint="Write short-answer for the built-in questions, or short-answer:FILE.jsonl.")
    task = load_short_answer(path or "short-answer")
    # an instruction-tuned model answers best in its chat template, unless the spec says otherwise
    template = spec.template if "template" in spec.model_fields_set else "auto"
    return ExactMatchTask(task.name, list(task.questions), template)
