"""The exact-match and fluency tasks, against plain transformers on a tiny model: greedy
answers judged by the documented rule, KL(P_0 ‖ P_r) and the perplexity of steered
continuations computed by hand with forward hooks of our own."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from repe_tradeoff.data import ShortAnswerQuestion, normalise_answer
from repe_tradeoff.engine.generation import Generations
from repe_tradeoff.tasks.text import ExactMatchTask, FluencyTask
from repe_tradeoff.workflows.sweep import SweepPlan, run_config, run_sweep
from tests.helpers import (
    NEUTRAL_PASSAGES,
    TEXT_LAYERS,
    added_by_hand,
    greedy_by_hand,
    random_vector,
    save_tiny_model,
)

NORMS = [-2.0, 0.0, 3.0]


def _sweep(lm, task, out: Path, **plan) -> list[dict]:
    vector = random_vector(TEXT_LAYERS)
    plan = SweepPlan(norms=NORMS, tasks=[task], layers=list(TEXT_LAYERS), chunk_size=2, batch_size=7, **plan)
    run_sweep(lm.model, lm.tokenizer, vector, plan, out,
              config=run_config(plan, vector, model_name="tiny", model_revision=None, dtype="float32"))
    rows = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["item"], r["norm"]))


def _logprobs(model, ids: list[int], r: float) -> torch.Tensor:
    with torch.no_grad(), added_by_hand(model, r):
        return model(torch.tensor([ids])).logits[0].float().log_softmax(-1)


@pytest.mark.parametrize("share", [True, False])
def test_kl_and_perplexity_match_a_hand_computation(tiny, tmp_path, share):
    records = _sweep(tiny, FluencyTask("fluency", NEUTRAL_PASSAGES, max_new_tokens=6), tmp_path / "run",
                     share_lower=share, share_prompts=share)
    assert len(records) == len(NEUTRAL_PASSAGES) * len(NORMS)
    tok, model = tiny.tokenizer, tiny.model
    for rec in records:
        ids = tok(NEUTRAL_PASSAGES[rec["item"]].text)["input_ids"]
        ref, steered = _logprobs(model, ids, 0.0), _logprobs(model, ids, rec["norm"])
        kl = float((ref.exp() * (ref - steered)).sum(-1).mean())
        assert rec["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-6), rec
        cont = greedy_by_hand(tiny, ids, rec["norm"], 6)
        assert rec["response"] == tok.decode(cont, skip_special_tokens=True).strip()
        eos = tok.eos_token_id
        assert rec["generated_tokens"] == (cont.index(eos) if eos in cont else len(cont))
        lp = _logprobs(model, ids + cont, 0.0)
        nll = -sum(float(lp[len(ids) - 1 + i, t]) for i, t in enumerate(cont)) / len(cont)
        assert rec["perplexity"] == pytest.approx(math.exp(nll), rel=1e-4), rec
    assert all(r["kl"] == 0.0 for r in records if r["norm"] == 0.0)
    assert all(r["kl"] > 1e-4 for r in records if r["norm"] != 0.0)  # steering moved the distributions


def test_exact_match_scores_the_models_own_greedy_answer(tiny, tmp_path):
    """The tiny model's answer steered at r = 3, computed by hand, is made the accepted answer of
    one question: that question scores 1 at r = 3; a question whose answer it never says scores 0."""
    tok = tiny.tokenizer
    ids = tok("User: What is 2 + 2?\nAssistant:")["input_ids"]
    answer = tok.decode(greedy_by_hand(tiny, ids, 3.0, 6), skip_special_tokens=True).strip()
    assert normalise_answer(answer), answer  # the scripted answer must keep a word
    questions = [ShortAnswerQuestion(question="What is 2 + 2?", answers=[answer], category="scripted"),
                 ShortAnswerQuestion(question="What is 2 + 2?", answers=["qqqqqqqq"], category="scripted")]
    records = _sweep(tiny, ExactMatchTask("sa", questions, "plain", max_new_tokens=6), tmp_path / "run")
    steered = {r["item"]: r for r in records if r["norm"] == 3.0}
    assert steered[0]["response"] == answer
    assert steered[0]["exact_match"] == 1.0 and steered[1]["exact_match"] == 0.0
    assert all(r["exact_match"] == float(normalise_answer(r["response"]) == normalise_answer(answer))
               for r in records if r["item"] == 0)  # a one-sentence reply of only the answer matches
    assert {r["kind"] for r in records} == {"helpfulness"}
    points = [json.loads(x) for x in (tmp_path / "run" / "points.jsonl").read_text().splitlines()]
    assert {p["metric"] for p in points} == {"exact_match", "generated_tokens"}


def test_exact_match_applies_the_matching_rule_and_counts_tokens(tiny, tmp_path, monkeypatch):
    """Scripted replies per norm: a sentence giving the answer, a number word, a wrong number."""
    from repe_tradeoff.engine import batching

    replies = {-2.0: ("Four.", 2), 0.0: ("The answer is 4. Or 5.", 9), 3.0: ("14", 1)}

    def scripted(model, tok, prompts, vector, norms, **options):
        assert options["max_new_tokens"] == 5 and options["template"] == "plain"
        texts = [[replies[r][0] for r in norms] for _ in prompts]
        return Generations([[] for _ in prompts], [[[]] * len(norms) for _ in prompts],
                           [[replies[r][1] for r in norms] for _ in prompts], texts)

    monkeypatch.setattr(batching, "generate_tokens", scripted)
    question = ShortAnswerQuestion(question="What is 2 + 2?", answers=["4", "four"], category="arithmetic")
    records = _sweep(tiny, ExactMatchTask("sa", [question], "plain", max_new_tokens=5), tmp_path / "run")
    assert [(r["norm"], r["exact_match"], r["generated_tokens"]) for r in records] == [
        (-2.0, 1.0, 2), (0.0, 1.0, 9), (3.0, 0.0, 1)]


def test_sweep_command_measures_short_answer_and_fluency(tmp_path):
    import subprocess
    import sys

    from tests.helpers import cli_env

    model = save_tiny_model(tmp_path / "model")
    random_vector(TEXT_LAYERS).save(tmp_path / "v.safetensors")
    base = [sys.executable, "-m", "repe_tradeoff", "-q", "sweep", "--model", str(model), "--vector",
            str(tmp_path / "v.safetensors"), "--norms=-1,0,1", "--limit", "2"]
    done = subprocess.run([*base, "--helpfulness", "short-answer", "--fluency", "neutral", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, env=cli_env(), timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [(t["name"], t["kind"]) for t in config["tasks"]] == [("short-answer", "helpfulness"),
                                                                   ("fluency-neutral", "fluency")]
    points = [json.loads(x) for x in (tmp_path / "run" / "points.jsonl").read_text().splitlines()]
    assert {(p["task"], p["metric"]) for p in points} == {
        ("short-answer", "exact_match"), ("short-answer", "generated_tokens"), ("fluency-neutral", "kl"),
        ("fluency-neutral", "perplexity"), ("fluency-neutral", "generated_tokens")}
    bad = subprocess.run([*base, "--fluency", "nonsense", "--out", str(tmp_path / "bad")], capture_output=True,
                         text=True, env=cli_env(), timeout=600, check=False)
    assert bad.returncode == 1 and "nonsense" in bad.stderr and "neutral" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()


def test_generation_keeps_prompts_times_norms_within_the_row_budget(tiny, monkeypatch):
    """Greedy generations in groups of prompts: no group has more rows (prompts × norms) than the
    budget, and every prompt's continuations are those of generating it alone."""
    from repe_tradeoff.engine import batching
    from repe_tradeoff.engine.steering import Steering

    real, groups = batching.generate_tokens, []

    def recording(model, tok, prompts, *args, **kwargs):
        groups.append(len(prompts))
        return real(model, tok, prompts, *args, **kwargs)

    monkeypatch.setattr(batching, "generate_tokens", recording)
    vector, prompts = random_vector(TEXT_LAYERS), [p.text for p in NEUTRAL_PASSAGES] + ["Two more words.", "The end."]
    plan = SweepPlan(norms=NORMS, tasks=[], layers=list(TEXT_LAYERS), batch_size=7)
    runner = batching.ChunkRunner(tiny.model, tiny.tokenizer, plan, Steering(vector, TEXT_LAYERS),
                                  batching.BatchBudget(7))
    got = runner.generate(prompts, "none", 6)
    assert groups == [2, 2, 1]  # 7 rows // 3 norms = 2 prompts a group
    for i, prompt in enumerate(prompts):
        alone = real(tiny.model, tiny.tokenizer, [prompt], vector, NORMS, layers=list(TEXT_LAYERS), template="none",
                     max_new_tokens=6)
        assert (got.prompt_ids[i], got.new_ids[i], got.texts[i]) == (alone.prompt_ids[0], alone.new_ids[0],
                                                                     alone.texts[0])
