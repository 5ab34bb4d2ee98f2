"""The measurement engine: batched scoring equals the plain per-norm computation; sweeps are
deterministic and resumable; scorers compute what they claim."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from repe_tradeoff.engine.generation import refusal_score
from repe_tradeoff.engine.scoring import MIN_SHARED_PREFIX, score, shared_prefix
from repe_tradeoff.engine.steering import POSITIONS, Steering, steer
from repe_tradeoff.models.prompts import letter_token_ids
from repe_tradeoff.runs import aggregate
from repe_tradeoff.workflows.grid import parse_norms
from repe_tradeoff.workflows.sweep import SweepError, SweepPlan, run_config, run_sweep
from tests.helpers import ByteTok, random_vector, sweep_tasks, tiny_model


def _reference(model, v, layers, prompts, conts, norms):
    """The paper's protocol: one norm at a time, one sequence at a time, the full model call."""
    out = torch.zeros(len(prompts), len(norms))
    shift = torch.zeros(len(prompts), len(norms))
    for k, r in enumerate(norms):
        for s, (p, c) in enumerate(zip(prompts, conts)):
            ids = torch.tensor([list(p) + list(c)])
            with torch.no_grad():
                plain = model(ids).logits[0, len(p) - 1]
                with steer(model, v, r, layers=layers):
                    logits = model(ids).logits[0]
            lp = logits.log_softmax(-1)
            out[s, k] = sum(lp[len(p) - 1 + j, t] for j, t in enumerate(c))
            shift[s, k] = (logits[len(p) - 1] - plain).norm()
    return out, shift


@pytest.mark.parametrize("prefix", [[], [40, 41, 42, 43, 44, 45, 46, 47, 48]], ids=["own", "common-prefix"])
@pytest.mark.parametrize("share_prompts", [True, False])
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_batched_scoring_equals_per_norm_loop(arch_model, share, share_prompts, attn, prefix):
    """Shared prompts (KV cache, left padding), a common prefix run once (as a chat template's
    system turn) and shared lower layers change no number."""
    arch, _ = arch_model
    model = tiny_model(arch, attn=attn)
    v = random_vector()
    prompts = [prefix + p for p in ([5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16], [5, 6, 7, 8], [9, 10, 11])]
    conts = [[20, 21], [22], [23, 24, 25], [26], [27, 28, 29, 30]]
    norms = [-3.0, -0.5, 1.5, 6.0]  # no 0: the reference row is added internally
    steering = Steering(v, (1, 2), share_lower=share, share_prompts=share_prompts)
    got = score(model, 0, prompts, conts, norms, steering, probe_ids=[3, 4])
    ref, shift = _reference(model, v, (1, 2), prompts, conts, norms)
    torch.testing.assert_close(got.continuation, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.logit_shift, shift, rtol=1e-4, atol=1e-3)
    assert got.probe_logprobs.shape == (5, 4, 2)
    torch.testing.assert_close(got.probe_logprobs[0], got.probe_logprobs[3])


def test_the_common_prefix_run_once_leaves_every_prompt_a_token():
    head = list(range(1, 11))  # 10 tokens
    assert shared_prefix([head + [50], head + [60, 61], head + [50]]) == 10
    assert shared_prefix([head, head + [11]]) == 9  # the shorter prompt keeps its last token
    assert MIN_SHARED_PREFIX == 8 and shared_prefix([head[:7] + [50], head[:7] + [60]]) == 0  # too short to share
    assert shared_prefix([head + [50]]) == 0 and shared_prefix([[9] + head, head]) == 0


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_common_prefix_is_steered_where_whole_sequences_are(arch, positions):
    """Run once and copied, the prefix counts as prompt positions, as in the whole sequences."""
    model, v = tiny_model(arch), random_vector()
    head = list(range(40, 50))
    prompts = [head + p for p in ([5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16], [5, 6, 7, 8])]
    conts = [[20, 21], [22], [23, 24, 25], [26]]
    steering = Steering(v, (1, 2), positions=positions)
    got = score(model, 0, prompts, conts, [-3.0, 1.5, 6.0], steering, probe_ids=[3, 4])
    whole = score(model, 0, prompts, conts, [-3.0, 1.5, 6.0], replace(steering, share_prompts=False), probe_ids=[3, 4])
    torch.testing.assert_close(got.continuation, whole.continuation, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.logit_shift, whole.logit_shift, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["opt", "gpt2"])
def test_unsteered_scoring_matches_model_logits(arch):
    model = tiny_model(arch)
    got = score(model, 0, [[3, 4, 5], [9, 3, 4, 5]], [[6, 7], [8]], [0.0], None)
    with torch.no_grad():
        lp = model(torch.tensor([[3, 4, 5, 6, 7]])).logits[0].log_softmax(-1)
        lp2 = model(torch.tensor([[9, 3, 4, 5, 8]])).logits[0].log_softmax(-1)
    assert abs(float(got.continuation[0, 0]) - float(lp[2, 6] + lp[3, 7])) < 1e-4
    assert abs(float(got.continuation[1, 0]) - float(lp2[3, 8])) < 1e-4


def test_extreme_norms_stay_finite():
    model = tiny_model("llama")
    got = score(model, 0, [[3, 4, 5]], [[6, 7]], [-1e3, 1e3], Steering(random_vector(), (1, 2)))
    assert torch.isfinite(got.continuation).all() and torch.isfinite(got.logit_shift).all()


def _plan(**kw):
    defaults = dict(norms=[-2.0, 0.0, 1.0, 3.0], tasks=sweep_tasks(), layers=[1, 2], chunk_size=2, batch_size=12)
    return SweepPlan(**{**defaults, **kw})


def _run(tmp_path, name, plan=None, **kw):
    model, v = tiny_model("llama"), random_vector()
    plan = plan or _plan()
    config = run_config(plan, v, model_name="tiny", model_revision=None, dtype="float32")
    return run_sweep(model, ByteTok(), v, plan, tmp_path / name, config=config, **kw)


def test_sweep_is_deterministic_and_resumable(tmp_path):
    a = _run(tmp_path, "a")
    b = _run(tmp_path, "b")
    assert (a / "items.jsonl").read_bytes() == (b / "items.jsonl").read_bytes()
    assert (a / "points.jsonl").read_bytes() == (b / "points.jsonl").read_bytes()
    # cut the run after 3 chunks, plus a torn half line, then resume
    lines = (a / "items.jsonl").read_text().splitlines(keepends=True)
    c = tmp_path / "c"
    c.mkdir()
    (c / "config.json").write_bytes((a / "config.json").read_bytes())
    (c / "items.jsonl").write_text("".join(lines[: 3 * 2 * 4 + 3]) + lines[30][:17])
    _run(tmp_path, "c")
    assert (c / "items.jsonl").read_bytes() == (a / "items.jsonl").read_bytes()
    assert (c / "points.jsonl").read_bytes() == (a / "points.jsonl").read_bytes()
    assert not (c / ".lock").exists()


def test_sweep_refuses_another_config(tmp_path):
    _run(tmp_path, "a")
    with pytest.raises(SweepError, match="different configuration.*norms"):
        _run(tmp_path, "a", plan=_plan(norms=[0.0, 1.0]))


def test_batching_does_not_change_results(tmp_path):
    a = _run(tmp_path, "a", plan=_plan(batch_size=3))
    b = _run(tmp_path, "b", plan=_plan(batch_size=500))
    ia = [json.loads(x) for x in (a / "items.jsonl").read_text().splitlines()]
    ib = [json.loads(x) for x in (b / "items.jsonl").read_text().splitlines()]
    for x, y in zip(ia, ib):
        for key in ("alignment", "helpfulness", "logit_shift"):
            if key in x:
                assert x[key] == pytest.approx(y[key], abs=1e-5)


def test_records_follow_their_definitions(tmp_path):
    run = _run(tmp_path, "a")
    items = [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]
    for rec in items:
        if rec["kind"] == "helpfulness":
            s = rec["scores"]
            z = sum(math.exp(x) for x in s)
            assert rec["helpfulness"] == pytest.approx(math.exp(s[rec["answer"]]) / z, rel=1e-4)
            assert rec["helpfulness_vocab"] == pytest.approx(math.exp(s[rec["answer"]]), rel=1e-3)
            assert rec["accuracy"] == float(max(range(4), key=s.__getitem__) == rec["answer"])
            assert (rec["logit_shift"] == 0.0) == (rec["norm"] == 0.0)
        else:
            p = 1 / (1 + math.exp(-rec["logit_gap"]))
            assert rec["alignment"] == pytest.approx(2 * p - 1, abs=1e-5)
    points = [json.loads(x) for x in (run / "points.jsonl").read_text().splitlines()]
    assert points == aggregate(items)
    mean0 = next(p for p in points if p["metric"] == "helpfulness" and p["norm"] == 0.0)
    values = [r["helpfulness"] for r in items if r["kind"] == "helpfulness" and r["norm"] == 0.0]
    assert mean0["mean"] == pytest.approx(sum(values) / len(values)) and mean0["n"] == 7


def test_parse_norms():
    assert parse_norms("-1:1:0.5") == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert parse_norms("2,0,-2,0") == [-2.0, 0.0, 2.0]
    assert len(parse_norms("-8:8:0.5")) == 33
    for bad in ("", "1:0:1", "0:1:0", "a,b", "1:2"):
        with pytest.raises(ValueError):
            parse_norms(bad)


def _tokenizer(style: str):
    """Offline tokenizers in the three families' styles (SentencePiece ▁, GPT-2 Ġ byte-level)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = ["A", "B", "C", "D"]
    if style == "llama":  # SentencePiece: "▁A", and a bare "▁" that must never be picked
        vocab = {"<unk>": 0, "▁": 1, **{f"▁{x}": 2 + i for i, x in enumerate(letters)}, **{x: 6 + i for i, x in enumerate(letters)}}
        tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="##"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
    else:  # GPT-2 / SmolLM: byte-level, "ĠA" for " A"
        vocab = {"<unk>": 0, **{x: 1 + i for i, x in enumerate(letters)}, **{f"Ġ{x}": 5 + i for i, x in enumerate(letters)}, "Ġ": 9}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.mark.parametrize("style", ["llama", "gpt2"])
def test_letter_tokens(style):
    tok = _tokenizer(style)
    for letter in "ABCD":
        ids = letter_token_ids(tok, letter)
        assert ids, letter
        for i in ids:
            assert tok.decode([i]).strip() == letter  # never a bare space / "▁" token


@pytest.mark.slow
def test_letter_tokens_embedded(embedded):
    tok = embedded.tokenizer
    ids = letter_token_ids(tok, "A")
    assert len(ids) == 2 and all(tok.decode([i]).strip() == "A" for i in ids)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm sorry, but I can't help with that.", 1.0),
        ("I CANNOT assist with this request!", 1.0),
        ("I\u2019m not able to do that.", 1.0),
        ("Sure! Here are the steps.", -1.0),
        ("Of course, first you take the lock…", -1.0),
        # documented mistakes of a phrase list:
        ("I can't believe how easy this is: first, …", 1.0),
        ("That would be wrong, so no.", -1.0),
    ],
)
def test_refusal_detector(text, expected):
    assert refusal_score(text) == expected


def test_out_of_memory_halves_the_batch(tmp_path, monkeypatch):
    """A batch that does not fit is split and retried; the results are those of a run that fit."""
    import repe_tradeoff.engine.batching as batching

    real = batching.score

    def small_memory(model, pad, prompts, *args):
        if len(prompts) > 3:
            raise torch.OutOfMemoryError("simulated")
        return real(model, pad, prompts, *args)

    a = _run(tmp_path, "a", plan=_plan(batch_size=500))
    monkeypatch.setattr(batching, "score", small_memory)
    plan = _plan(batch_size=500)
    b = _run(tmp_path, "b", plan=plan)
    assert plan.batch_size == 500  # the plan (what config.json says was asked) is left alone
    ia = [json.loads(x) for x in (a / "items.jsonl").read_text().splitlines()]
    ib = [json.loads(x) for x in (b / "items.jsonl").read_text().splitlines()]
    assert len(ia) == len(ib)
    for x, y in zip(ia, ib):
        assert x.get("helpfulness", x.get("alignment")) == pytest.approx(y.get("helpfulness", y.get("alignment")), abs=1e-5)
