"""Score a chunk of sequences at every norm in forward passes of bounded size.

A pass holds at most ``budget.rows`` rows (sequence × norm). A pass that runs out of memory is
split in two and retried, and the budget stays halved for the rest of the sweep; the plan itself
is never changed, so what the run was asked to do stays what ``config.json`` says.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from repe_tradeoff.engine.fluency import next_token_kl
from repe_tradeoff.engine.generation import Generations, generate_tokens
from repe_tradeoff.engine.scoring import Scores, TaskSequences, grid_origin, score
from repe_tradeoff.engine.steering import Steering
from repe_tradeoff.errors import SweepError
from repe_tradeoff.models.loading import model_device

log = logging.getLogger(__name__)


class Grid(Protocol):
    """What the engine needs of a sweep's plan (a dataclass, so a runner can narrow its norms)."""

    norms: list
    batch_size: int
    max_new_tokens: int
    response_scorer: str


@dataclass
class BatchBudget:
    """Rows per forward pass; halved when a pass runs out of memory."""

    rows: int

    def halve(self) -> int:
        self.rows = max(1, self.rows // 2)
        return self.rows


def default_batch_size(model) -> int:
    """Rows per forward: a GPU is kept busy only by larger batches; out-of-memory halves it anyway."""
    return 1024 if model_device(model).type == "cuda" else 256


def _concat(parts: Sequence[Scores], dim: int) -> Scores:
    def join(name: str):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values, dim)

    return Scores(join("continuation"), join("probe_logprobs"), join("logit_shift"))


def _score_batch(model, pad: int, seqs: TaskSequences, batch: list[int], norms: list[float],
                 steering: Steering, budget: BatchBudget) -> Scores:
    """Score one batch; on out-of-memory, halve the budget and score each half."""
    try:
        return score(model, pad, [seqs.prompts[r] for r in batch], [seqs.continuations[r] for r in batch],
                     norms, steering, seqs.probe_ids)
    except torch.OutOfMemoryError:
        if len(batch) == 1:
            raise SweepError(
                f"one sequence at {len(norms)} norms does not fit in memory: use fewer norms per pass "
                "(--batch-size below the number of norms), a smaller dtype, or --device auto"
            ) from None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of memory at %d sequences × %d norms; continuing with --batch-size %d",
                    len(batch), len(norms), budget.halve())
        half = len(batch) // 2
        return _concat([_score_batch(model, pad, seqs, part, norms, steering, budget)
                        for part in (batch[:half], batch[half:])], 0)


def _norm_groups(norms: list, rows: int, unit: int = 1) -> list[list]:
    """The grid in near-equal groups small enough that ``unit`` sequences (those sharing one
    prompt) at a group (+ norm 0) fit in ``rows``."""
    widest = max(1, rows // unit - 1)
    groups = max(1, math.ceil(len(norms) / widest))
    per_group = math.ceil(len(norms) / groups)
    return [norms[i : i + per_group] for i in range(0, len(norms), per_group)]


def _prompt_units(order: list[int], seqs: TaskSequences, shared: bool) -> list[list[int]]:
    """``order`` cut into runs of sequences scored from one prompt pass (those sharing a prompt,
    when prompts are shared; else each sequence alone)."""
    units: list[list[int]] = []
    for r in order:
        if shared and units and seqs.prompts[units[-1][-1]] == seqs.prompts[r]:
            units[-1].append(r)
        else:
            units.append([r])
    return units


def _batches(units: list[list[int]], cap: int) -> list[list[int]]:
    """Whole units packed in order into batches of at most ``cap`` sequences; a unit larger than
    ``cap`` is split (its prompt then runs once per part)."""
    out: list[list[int]] = [[]]
    for unit in units:
        for i in range(0, len(unit), cap):
            part = unit[i : i + cap]
            if len(out[-1]) + len(part) > cap:
                out.append([])
            out[-1].extend(part)
    return [b for b in out if b]


def score_chunk(model, tokenizer, seqs: TaskSequences, rows: list[int], plan: Grid,
                steering: Steering, budget: BatchBudget | None = None) -> Scores:
    """Scores of sequences ``rows`` (in that order) at every norm of the plan, in forward passes
    of at most ``budget.rows`` rows (``plan.batch_size`` when no budget is given).

    A pass holds whole prompts: the sequences sharing one (a question's options) are scored
    together, and a grid too wide for that is split into groups of norms, so every prompt runs
    once per norm (a prompt split over two passes would run twice)."""
    budget = budget or BatchBudget(plan.batch_size)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(rows, key=lambda r: (len(seqs.prompts[r]), seqs.owners[r], r))  # a prompt's sequences together
    units = _prompt_units(order, seqs, steering is None or steering.share_prompts)
    columns = []
    for group in _norm_groups(plan.norms, budget.rows, max(len(u) for u in units)):
        cap = max(1, budget.rows // (len(group) + (grid_origin(group) not in group)))
        columns.append(_concat([_score_batch(model, pad, seqs, batch, group, steering, budget)
                                for batch in _batches(units, cap)], 0))  # batches keep `order`
    position = {r: i for i, r in enumerate(order)}
    back = torch.tensor([position[r] for r in rows])
    joined = _concat(columns, 1)
    return Scores(joined.continuation[back], None if joined.probe_logprobs is None else joined.probe_logprobs[back],
                  joined.logit_shift[back])


@dataclass
class ChunkRunner:
    """What a task is given to score its items: the steered model, the grid and the batch budget."""

    model: object
    tokenizer: object
    plan: Grid
    steering: Steering
    budget: BatchBudget

    @property
    def norms(self) -> list[float]:
        return self.plan.norms

    @property
    def response_scorer(self) -> str:
        return self.plan.response_scorer

    def score(self, seqs: TaskSequences, rows: list[int]) -> Scores:
        return score_chunk(self.model, self.tokenizer, seqs, rows, self.plan, self.steering, self.budget)

    def generate(self, prompts: list[str], template: str, max_new_tokens: int | None = None) -> Generations:
        """Greedy steered continuations of every prompt at every norm (``.texts[prompt][norm]``)."""
        s = self.steering
        # prompts × norms rows share one KV cache: groups of prompts keep it within the row budget
        step = max(1, self.budget.rows // len(self.plan.norms))
        parts = [generate_tokens(self.model, self.tokenizer, prompts[i : i + step], s.vector, self.plan.norms,
                                 layers=list(s.layers), positions=s.positions, operator=s.operator,
                                 template=template, max_new_tokens=max_new_tokens or self.plan.max_new_tokens)
                 for i in range(0, len(prompts), step)]
        return Generations(*(sum((getattr(g, f) for g in parts), []) for f in
                             ("prompt_ids", "new_ids", "lengths", "texts")))

    def score_unsteered(self, seqs: TaskSequences, rows: list[int]) -> Scores:
        """Scores of sequences ``rows`` under the unsteered model (one column, r = 0)."""
        plan = replace(self.plan, norms=[0.0])
        return score_chunk(self.model, self.tokenizer, seqs, rows, plan, None, self.budget)

    def next_token_kl(self, passages: list[list[int]]) -> torch.Tensor:
        """``(passages, norms)`` mean KL(P_0 ‖ P_r) over positions, in passes of bounded size."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        parts, start = [], 0
        while start < len(passages):
            step = max(1, self.budget.rows // (len(self.norms) + 1))
            try:
                parts.append(next_token_kl(self.model, pad, passages[start : start + step], self.norms, self.steering))
            except torch.OutOfMemoryError:
                if step == 1:
                    raise SweepError("one passage at every norm does not fit in memory: use a smaller "
                                     "dtype, shorter passages or --device auto") from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning("out of memory in the fluency pass; continuing with --batch-size %d", self.budget.halve())
                continue
            start += step
        return torch.cat(parts, 0)
