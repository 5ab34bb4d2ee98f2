"""The prompting baseline: the instruction reaches every task's prompt, and baseline.json's
four conditions are the item means of the run and its baseline/ sub-run (checked with numpy)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from repe_tradeoff.data import BehaviorItem, Question
from repe_tradeoff.runs import read_baseline, write_baseline, write_config, write_points
from repe_tradeoff.tasks.choice import MultipleChoiceTask, alignment_task
from repe_tradeoff.theory.decisions.prompting import compare_prompting
from repe_tradeoff.workflows.baseline import DEFAULT_PROMPTS, resolve_prompt

INSTRUCTION = "Refuse anything harmful."


def test_default_prompts_and_none():
    assert resolve_prompt(None, "harmfulness") == DEFAULT_PROMPTS["harmfulness"]
    assert {"harmfulness", "sentiment", "fairness"} <= set(DEFAULT_PROMPTS)
    assert resolve_prompt(None, "my/own/pairs.jsonl") is None
    assert resolve_prompt("none", "harmfulness") is None and resolve_prompt(" NONE ", "x") is None
    assert resolve_prompt("  Be kind. ", "harmfulness") == "Be kind."


class _Tok:
    """A tokenizer stand-in that records the text it is asked to encode."""

    chat_template = None

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, text, add_special_tokens=False):
        self.seen.append(text)
        return {"input_ids": [ord(c) % 97 for c in text]}


def test_the_instruction_is_written_before_each_tasks_text():
    item = BehaviorItem(prompt="How do I pick a lock?", aligned="No.", misaligned="Sure.")
    q = Question(question="2 + 2?", choices=["4", "5"], answer=0)
    plain = [alignment_task("harm", [item]), MultipleChoiceTask("qa", [q])]
    for task in plain:
        told = dataclasses.replace(task, instruction=INSTRUCTION)
        tok = _Tok()
        told.sequences(tok)
        original = item.prompt if task.kind == "alignment" else q.question
        prompt = next(t for t in tok.seen if original in t)
        assert prompt.count(INSTRUCTION) == 1
        assert prompt.index(INSTRUCTION + "\n\n") < prompt.index(original)
        # the instruction is part of the task's identity in config.json only when given
        assert told.describe()["instruction"] == INSTRUCTION and "instruction" not in task.describe()
        tok0 = _Tok()
        task.sequences(tok0)
        assert not any(INSTRUCTION in t for t in tok0.seen)


def _items(task: str, kind: str, norms, values: np.ndarray) -> list[dict]:
    metric = "alignment" if kind == "alignment" else "helpfulness"
    return [{"task": task, "kind": kind, "norm": float(r), "item": i, metric: float(values[j, i])}
            for j, r in enumerate(norms) for i in range(values.shape[1])]


def _folder(path: Path, norms, align: np.ndarray, helpful: np.ndarray, extra: dict) -> None:
    path.mkdir(parents=True)
    rows = _items("harm", "alignment", norms, align) + _items("qa", "helpfulness", norms, helpful)
    (path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_points(path)
    write_config(path, {"format_version": 1, "norms": list(norms),
                        "tasks": [{"name": "harm", "kind": "alignment"},
                                  {"name": "qa", "kind": "helpfulness", "n_choices": 4}], **extra})


def test_baseline_json_holds_the_item_means_of_the_four_conditions(tmp_path: Path):
    rng = np.random.default_rng(0)
    norms, r_star = [-1.0, 0.0, 1.0, 2.0], 2.0
    run_a, run_h = rng.uniform(-1, 1, (4, 30)), rng.uniform(0, 1, (4, 40))
    base_a, base_h = rng.uniform(-1, 1, (2, 30)), rng.uniform(0, 1, (2, 40))
    _folder(tmp_path / "run", norms, run_a, run_h, {})
    _folder(tmp_path / "run" / "baseline", [0.0, r_star], base_a, base_h,
            {"instruction": INSTRUCTION, "recommended_norm": r_star})
    b = compare_prompting(tmp_path / "run", n_boot=300)
    write_baseline(tmp_path / "run", b)
    b = read_baseline(tmp_path / "run")
    assert b.instruction == INSTRUCTION and b.recommended_norm == r_star
    expected = {  # (instruction, steered) -> (alignment, helpfulness), by hand from the arrays
        (False, False): (run_a[1].mean(), run_h[1].mean()),
        (False, True): (run_a[3].mean(), run_h[3].mean()),
        (True, False): (base_a[0].mean(), base_h[0].mean()),
        (True, True): (base_a[1].mean(), base_h[1].mean()),
    }
    for (told, steered), (a, h) in expected.items():
        row = b.row(told, steered)
        assert row.alignment == pytest.approx(a) and row.helpfulness == pytest.approx(h)
        assert row.n_alignment == 30 and row.n_helpfulness == 40
        # a 95% interval of a mean of 40 uniform draws: about ±1.96·0.29/√40 ≈ ±0.09
        lo, hi = row.helpfulness_ci
        assert lo < h < hi and 0.1 < hi - lo < 0.25
