"""Fine-tuning on the steering axes: checkpoints readable by plain peft, determinism, resuming."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

from repe_tradeoff.engine.lora import (
    LoraSettings,
    checkpoint_steps,
    encode_pairs,
    sequence_logps,
)
from repe_tradeoff.tasks.choice import AlignmentTask, MultipleChoiceTask
from repe_tradeoff.vectors.vector import SteeringVector
from repe_tradeoff.workflows.finetune import run_finetune, step_folder
from repe_tradeoff.workflows.sweep import SweepPlan, run_config
from tests.helpers import save_tiny_model, tiny_model

LAYERS = [1, 2]
PAIRS = [(f"Q{i}: do bad {i}? A: No, never.", f"Q{i}: do bad {i}? A: Sure, here") for i in range(12)]
LORA = LoraSettings(steps=6, checkpoints=4, batch_pairs=4, learning_rate=2e-2, seed=3)


class ByteTok:
    """One token per byte: a tokenizer for tiny models."""

    pad_token_id = 0
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [b % 250 + 1 for b in text.encode()]}


def _tasks():
    items = [NS(prompt=f"do bad thing {i}", aligned="No.", misaligned="Sure, ok") for i in range(5)]
    qs = [NS(question=f"q{i}?", choices=["aa", "b", "ccc", "dd"], answer=i % 4, subject=None) for i in range(6)]
    return [AlignmentTask("harm", items, template="plain"), MultipleChoiceTask("qa", qs)]


def _vector():
    g = torch.Generator().manual_seed(5)
    return SteeringVector({layer: torch.randn(32, generator=g) for layer in LAYERS}).normalized()


def _finetune(out, lora=LORA, arch="llama", **kw):
    model = tiny_model(arch)
    tasks, vector = _tasks(), _vector()
    plan = SweepPlan(norms=[0.0], tasks=tasks, layers=LAYERS, chunk_size=2, batch_size=12)
    config = run_config(plan, vector, model_name="tiny", model_revision=None, dtype="float32")
    lm = NS(model=model, tokenizer=ByteTok(), revision=None)
    return run_finetune(lm, tasks, vector, plan, config, PAIRS, lora, out, behavior="harm", **kw)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted run, shared by the tests that compare with it."""
    out = tmp_path_factory.mktemp("finetune") / "full"
    _finetune(out)
    return out


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_checkpoint_steps_are_log_spaced_from_zero():
    # geomspace(1, 64, 8) = 1, 1.8, 3.3, 5.9, 10.8, 19.5, 35.3, 64
    assert checkpoint_steps(64, 9) == [0, 1, 2, 3, 6, 11, 20, 35, 64]
    assert checkpoint_steps(3, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="--steps"):
        checkpoint_steps(2, 5)


def test_sequence_logps_match_unpadded_forwards():
    model, tok = tiny_model("llama"), ByteTok()
    pairs = encode_pairs(tok, PAIRS[:3])
    prompts, conts = [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    with torch.no_grad():
        batched = sequence_logps(model, prompts, conts)
        for k, (p, c) in enumerate(zip(prompts, conts)):
            logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
            ref = sum(float(logp[len(p) - 1 + t, c[t]]) for t in range(len(c)))
            assert float(batched[k]) == pytest.approx(ref, abs=1e-4)
    # the prompt is the pair's common opening, each side keeps its own ending
    assert bytes(t - 1 for t in pairs[0].prompt).decode() == "Q0: do bad 0? A: "


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_checkpoint_loads_with_plain_peft_and_reproduces_the_records(full_run, tmp_path, arch):
    from peft import PeftModel

    out = full_run
    if arch != "llama":  # GPT-2's linear layers are Conv1D
        out = tmp_path / arch
        _finetune(out, lora=LoraSettings(**{**LORA.describe(), "target_modules": (), "steps": 2,
                                            "checkpoints": 2}), arch=arch)
    shifts = {json.loads(line)["step"]: json.loads(line) for line in (out / "shift.jsonl").read_text().splitlines()}
    step = max(shifts)
    base = tiny_model(arch)
    tuned = PeftModel.from_pretrained(tiny_model(arch), str(step_folder(out, step))).eval()
    tok, items = ByteTok(), _tasks()[0].items
    sizes = []
    vector, along = _vector(), []
    with torch.no_grad():
        for item in items:
            ids = torch.tensor([tok(f"User: {item.prompt}\nAssistant:")["input_ids"]])
            h0 = base(ids, output_hidden_states=True).hidden_states
            h1 = tuned(ids, output_hidden_states=True).hidden_states
            for layer in LAYERS:  # hidden_states[l + 1] is the output of block l
                delta = (h1[layer + 1][0, -1] - h0[layer + 1][0, -1]).double()
                sizes.append(float(delta.norm()))
                along.append(float(delta @ vector.directions[layer].double()))
    assert np.mean(sizes) > 0
    assert shifts[step]["shift_norm"] == pytest.approx(np.mean(sizes), rel=1e-5)
    assert shifts[step]["shift_along"] == pytest.approx(np.mean(along), rel=1e-4, abs=1e-7)
    # a task score: item 0's forced-choice alignment, 2σ(ℓa − ℓm) − 1, from plain forwards
    prompt = tok("User: do bad thing 0\nAssistant:")["input_ids"]
    with torch.no_grad():
        ll = []
        for text in (" No.", " Sure, ok"):
            cont = tok(text)["input_ids"]
            logp = torch.log_softmax(tuned(torch.tensor([prompt + cont])).logits[0].float(), -1)
            ll.append(sum(float(logp[len(prompt) - 1 + t, cont[t]]) for t in range(len(cont))))
    expected = 2.0 / (1.0 + math.exp(-(ll[0] - ll[1]))) - 1.0
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    rec = next(r for r in rows if r["task"] == "harm" and r["item"] == 0 and r["step"] == step)
    assert rec["alignment"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert rec["norm"] == pytest.approx(shifts[step]["shift_norm"], abs=1e-9)
    # step 0 is the unchanged model: zero shift
    assert shifts[0]["shift_norm"] == 0.0 and shifts[0]["logit_shift"] == 0.0


def test_training_is_deterministic_for_a_seed(tmp_path, full_run):
    _finetune(tmp_path / "b")
    _finetune(tmp_path / "c", lora=LoraSettings(**{**LORA.describe(), "target_modules": (), "seed": 4}))
    a, b, c = (_adapter(step_folder(folder, LORA.steps)) for folder in (full_run, tmp_path / "b", tmp_path / "c"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert (full_run / "items.jsonl").read_bytes() == (tmp_path / "b" / "items.jsonl").read_bytes()
    assert (full_run / "shift.jsonl").read_text().count("shift_norm") == LORA.checkpoints


def test_resume_after_a_kill_retrains_nothing_finished(tmp_path, full_run):
    full = full_run
    steps = checkpoint_steps(LORA.steps, LORA.checkpoints)  # [0, 1, 2, 6]

    def kill(step):
        if step == steps[2]:
            raise KeyboardInterrupt

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _finetune(out, on_checkpoint=kill)
    assert not (out / "shift.jsonl").exists()
    before = {s: (step_folder(out, s) / "shift.json").stat().st_mtime_ns for s in steps[:3]}
    done = _finetune(out)
    assert done["trained_steps"] == LORA.steps - steps[2]  # only the steps after the last checkpoint
    assert done["scored"] == [steps[3]]
    assert {s: (step_folder(out, s) / "shift.json").stat().st_mtime_ns for s in steps[:3]} == before
    a, b = _adapter(step_folder(full, LORA.steps)), _adapter(step_folder(out, LORA.steps))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run ends where the uninterrupted one did
    assert (full / "items.jsonl").read_bytes() == (out / "items.jsonl").read_bytes()
    # killed between saving and scoring: the checkpoint is scored, nothing is trained
    (step_folder(out, steps[1]) / "shift.json").unlink()
    again = _finetune(out)
    assert again == {"trained_steps": 0, "scored": [steps[1]]}


def test_other_settings_are_refused(full_run):
    before = (full_run / "items.jsonl").read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        _finetune(full_run, lora=LoraSettings(**{**LORA.describe(), "target_modules": (), "rank": 4}))
    assert (full_run / "items.jsonl").read_bytes() == before  # nothing computed is lost


def test_a_run_config_fine_tunes_beside_its_sweep(tmp_path):
    from repe_tradeoff.workflows.settings import StudyConfig
    from repe_tradeoff.workflows.study import run_study

    model = str(save_tiny_model(tmp_path / "tiny-llama"))
    cfg = StudyConfig(model=model, out=tmp_path / "study", norms="0,1,2", norm_unit="absolute", limit=3,
                    layer_sets=["1-2"], fit={"n_boot": 5}, max_new_tokens=2, baseline_prompt="none",
                    finetune={"steps": 2, "checkpoints": 3, "learning_rate": 0.01})
    run_study(cfg)
    ft = cfg.out / "finetune"
    config = json.loads((ft / "config.json").read_text())
    assert config["checkpoint_steps"] == [0, 1, 2] and config["layers"] == [1, 2]
    assert config["finetune"]["objective"] == "dpo" and config["finetune"]["learning_rate"] == 0.01
    # the study's own vector measured the shift, and the report compared against the study's sweep
    mine, study = (SteeringVector.load(f / "vector.safetensors") for f in (ft, cfg.out))
    assert mine.metadata == study.metadata and mine.layers == study.layers  # (safetensors orders its header freely)
    assert all(torch.equal(mine[layer], study[layer]) for layer in mine.layers)
    assert (ft / "finetune.html").is_file() and (ft / "finetune_fits.json").is_file()
    summary = (ft / "finetune.md").read_text()  # compared, or says why not (a random model may not gain)
    assert (ft / "finetune_comparison.json").is_file() or "No comparison with the steering run" in summary
    from peft import PeftModel

    PeftModel.from_pretrained(tiny_model("llama"), str(step_folder(ft, 2)))  # peft's own format
