"""The batch plan of a chunk: every pass within the row budget, every prompt run once per norm
(a question's options in the same pass), the scores those of a single unbounded pass."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
import torch

from repe_tradeoff.engine import batching
from repe_tradeoff.engine.steering import Steering
from repe_tradeoff.tasks.choice import MultipleChoiceTask
from repe_tradeoff.workflows.sweep import SweepPlan
from tests.helpers import ByteTok, random_vector, tiny_model

NORMS = [round(-4.0 + 0.1 * i, 6) for i in range(81)]  # 81 norms, 0 among them


def _task(n: int = 7) -> MultipleChoiceTask:
    qs = [NS(question=f"question number {i}?", choices=["aa", "b", "ccc", "dd"], answer=i % 4, subject=None)
          for i in range(n)]
    return MultipleChoiceTask("qa", qs)


def _scored(monkeypatch, rows_budget: int, share_prompts: bool = True):
    """The chunk's scores, and each pass as (prompts, norms evaluated)."""
    real, passes = batching.score, []

    def recording(model, pad, prompts, continuations, norms, *args):
        passes.append(([tuple(p) for p in prompts], len(norms) + (0.0 not in norms)))
        return real(model, pad, prompts, continuations, norms, *args)

    monkeypatch.setattr(batching, "score", recording)
    task, tok, model = _task(), ByteTok(), tiny_model("llama")
    seqs = task.sequences(tok)
    plan = SweepPlan(norms=NORMS, tasks=[task], layers=[1, 2], batch_size=rows_budget, share_prompts=share_prompts)
    steering = Steering(random_vector(), (1, 2), share_prompts=share_prompts)
    scores = batching.score_chunk(model, tok, seqs, list(range(len(seqs.prompts))), plan, steering)
    return scores, passes


@pytest.mark.parametrize("budget", [256, 64])
def test_each_prompt_runs_once_per_norm_within_the_budget(monkeypatch, budget):
    reference, _ = _scored(monkeypatch, 10**6)
    scores, passes = _scored(monkeypatch, budget)
    assert all(len(prompts) * width <= budget for prompts, width in passes)
    runs: dict[tuple, int] = {}  # a prompt's norm evaluations over all passes
    for prompts, width in passes:
        for p in set(prompts):
            runs[p] = runs.get(p, 0) + width
            assert prompts.count(p) == 4  # all of a question's options in the pass
    groups = -(-len(NORMS) // max(1, budget // 4 - 1))
    assert set(runs.values()) == {len(NORMS) + groups - 1}  # one r = 0 reference per group without it
    torch.testing.assert_close(scores.continuation, reference.continuation, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores.logit_shift, reference.logit_shift, rtol=1e-5, atol=1e-4)


def test_unshared_prompts_pack_single_sequences(monkeypatch):
    """Without prompt sharing every sequence runs whole, so passes are filled sequence by sequence."""
    reference, _ = _scored(monkeypatch, 10**6, share_prompts=False)
    scores, passes = _scored(monkeypatch, 256, share_prompts=False)
    assert [len(p) for p, _ in passes][:-1] == [256 // 81] * (len(passes) - 1)
    torch.testing.assert_close(scores.continuation, reference.continuation, rtol=1e-5, atol=1e-5)

