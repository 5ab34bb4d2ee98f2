"""lm-evaluation-harness tasks as helpfulness: requests built by lm-eval's registry from a local
task YAML, scored by the sweep, checked against lm-eval's own ``steered`` model."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from repe_tradeoff.models.prompts import TaskError
from repe_tradeoff.workflows.settings import HelpfulnessSpec, StudyConfig, SweepSettings

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'repe-tradeoff[lm-eval]')")

from repe_tradeoff.tasks.lm_eval import encode_request, lm_eval_task, load_lm_eval_docs

QUESTIONS = [
    {"question": "What is the capital of France?", "choices": ["Berlin", "Madrid", "Paris", "Rome"], "answer": 2},
    {"question": "How many legs does a spider have?", "choices": ["six", "eight", "ten", "four"], "answer": 1},
    {"question": "Which animal says moo?", "choices": ["cow", "cat", "dog", "duck"], "answer": 0},
    {"question": "What colour is the sky on a clear day?", "choices": ["green", "red", "blue", "black"], "answer": 2},
    {"question": "What is two plus two?", "choices": ["three", "five", "six", "four"], "answer": 3},
    {"question": "Which is a fruit?", "choices": ["carrot", "apple", "potato", "onion"], "answer": 1},
]


def write_task(folder: Path, name: str = "qa_local", questions=QUESTIONS, extra: str = "") -> Path:
    """A local lm-eval task: a JSONL of questions and a YAML over it with ``dataset_path: json``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in questions))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n" + extra
    )
    return folder


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    write_task(folder)
    write_task(folder, "qa_newline", extra='target_delimiter: "\\n"\n')
    write_task(folder, "qa_fewshot", extra="fewshot_split: test\nnum_fewshot: 2\n")
    write_task(folder, "qa_generate", extra="")
    text = (folder / "qa_generate.yaml").read_text().replace("output_type: multiple_choice", "output_type: generate_until")
    (folder / "qa_generate.yaml").write_text(text.replace("  - metric: acc_norm\n", "").replace("acc", "exact_match"))
    return folder


def test_requests_are_the_tasks_template_and_delimiter(task_dir):
    docs = load_lm_eval_docs("qa_local", task_dir)
    assert len(docs) == len(QUESTIONS)
    for doc, q in zip(docs, QUESTIONS):  # lm-eval's default target delimiter is one space
        assert doc.contexts == [f"Question: {q['question']}\nAnswer:"] * 4
        assert doc.continuations == [" " + c for c in q["choices"]]
        assert (doc.choices, doc.answer) == (q["choices"], q["answer"])
    newline = load_lm_eval_docs("qa_newline", task_dir)
    assert newline[0].continuations == ["\n" + c for c in QUESTIONS[0]["choices"]]


def test_few_shot_contexts_hold_other_solved_questions(task_dir):
    docs = load_lm_eval_docs("qa_fewshot", task_dir)
    for doc, q in zip(docs, QUESTIONS):
        shots, current = doc.contexts[0].rsplit("\n\n", 1)[0].split("\n\n"), doc.contexts[0].rsplit("\n\n", 1)[1]
        assert current == f"Question: {q['question']}\nAnswer:"
        assert len(shots) == 2
        for shot in shots:  # a solved question from the same split, never the one asked
            other = next(o for o in QUESTIONS if shot.startswith(f"Question: {o['question']}"))
            assert other is not q and shot == f"Question: {other['question']}\nAnswer: {other['choices'][other['answer']]}"
    again = load_lm_eval_docs("qa_fewshot", task_dir)  # lm-eval's fixed few-shot seed: the same contexts
    assert [d.contexts for d in again] == [d.contexts for d in docs]
    zero = load_lm_eval_docs("qa_fewshot", task_dir, num_fewshot=0)
    assert zero[0].contexts[0] == f"Question: {QUESTIONS[0]['question']}\nAnswer:"


def test_encode_request_follows_lm_evals_splitting(embedded):
    tok = embedded.tokenizer
    # a trailing space of the context belongs to the continuation's first token
    context, option = encode_request(tok, "Answer: ", "Paris")
    assert context == tok.encode("Answer:") and context + option == tok.encode("Answer: Paris")
    context, option = encode_request(tok, "Q: 2+2=", " 4")
    assert context + option == tok.encode("Q: 2+2= 4") and option  # the continuation is never empty
    # an empty context is the prefix token (BOS, else EOS), as lm-eval conditions on it
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    assert encode_request(tok, "", " Paris") == ([prefix], tok.encode(" Paris", add_special_tokens=False))


def test_errors_name_the_problem(task_dir):
    with pytest.raises(TaskError, match="generate_until task.*only multiple_choice"):
        lm_eval_task("qa_generate", task_dir)
    with pytest.raises(TaskError, match="include folder .* does not exist"):
        lm_eval_task("qa_local", task_dir / "missing")


@pytest.mark.slow  # indexes lm-eval's own task files (many seconds)
def test_unknown_task_suggests_close_names(task_dir):
    with pytest.raises(TaskError, match=r"no task 'qa_locl'.*did you mean qa_local"):
        lm_eval_task("qa_locl", task_dir)


def test_missing_lm_eval_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)  # as if not installed
    with pytest.raises(TaskError, match=r"pip install 'repe-tradeoff\[lm-eval\]'"):
        lm_eval_task("anything")


def test_specs_accept_lm_eval_tasks(tmp_path):
    assert HelpfulnessSpec(spec="lm-eval:arc_easy").lm_eval == "arc_easy"
    settings = SweepSettings(helpfulness=["lm-eval:hellaswag", "basic-qa"])
    assert [(h.spec, h.lm_eval) for h in settings.helpfulness] == [(None, "hellaswag"), ("basic-qa", None)]
    cfg = StudyConfig.model_validate({"helpfulness": [{"lm_eval": "qa_local", "include": str(tmp_path), "num_fewshot": 3}]})
    assert (cfg.helpfulness[0].lm_eval, cfg.helpfulness[0].include, cfg.helpfulness[0].num_fewshot) == (
        "qa_local", str(tmp_path), 3)
    for bad, message in [({"spec": "basic-qa", "lm_eval": "x"}, "not both"),
                         ({"spec": "basic-qa", "include": "d"}, "lm-eval tasks only"),
                         ({"lm_eval": "x", "format": "letter"}, "its own prompt format"),
                         ({"lm_eval": " "}, "needs a task name")]:
        with pytest.raises(ValueError, match=message):
            HelpfulnessSpec.model_validate(bad)


def test_settings_build_an_lm_eval_task(task_dir):
    from repe_tradeoff.workflows.prepare import build_tasks

    settings = SweepSettings(helpfulness=[{"lm_eval": "qa_local", "include": str(task_dir)}, "basic-qa"])
    lm_task, builtin = build_tasks(settings)
    entry = lm_task.describe()
    assert (lm_task.name, lm_task.n_items, entry["n_choices"]) == ("lm-eval:qa_local", len(QUESTIONS), 4)
    assert entry["lm_eval"]["task"] == "qa_local" and entry["lm_eval"]["fewshot_seed"] == 1234
    assert builtin.name == "basic-qa"


def test_cli_refuses_lm_eval_options_it_cannot_use(tmp_path):
    from tests.helpers import error_message, run_plain

    sweep = ["sweep", "--out", str(tmp_path / "r"), "--vector", str(tmp_path / "v.safetensors")]
    without, letter = run_plain([sweep + ["--helpfulness", "basic-qa", "--lm-eval-include", str(tmp_path)],
                                 sweep + ["--helpfulness", "lm-eval:qa_local", "--format", "letter"]], str(tmp_path))
    assert without.rc == 2 and "use it with --helpfulness lm-eval:TASK" in error_message(without.stderr)
    assert letter.rc == 2 and "its own prompt format" in error_message(letter.stderr)
    assert not (tmp_path / "r").exists()


def test_cli_sweep_of_an_lm_eval_task(task_dir, tmp_path):
    """The whole command: --helpfulness lm-eval:TASK --lm-eval-include DIR on a tiny model."""
    from repe_tradeoff.vectors.vector import SteeringVector
    from tests.helpers import run_plain, save_tiny_model

    tiny = save_tiny_model(tmp_path / "tiny")
    SteeringVector({1: torch.ones(32)}).normalized().save(tmp_path / "v.safetensors")
    out = tmp_path / "run"
    (done,) = run_plain([["-q", "sweep", "--out", str(out), "--vector", str(tmp_path / "v.safetensors"),
                          "--model", str(tiny), "--norms", "-1,0,1", "--helpfulness", "lm-eval:qa_local",
                          "--lm-eval-include", str(task_dir)]], str(tmp_path))
    assert done.rc == 0, done.stderr
    items = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert len(items) == 3 * len(QUESTIONS) and {r["task"] for r in items} == {"lm-eval:qa_local"}
    for r in items:  # accuracy_norm by hand: log-likelihood per character of the option
        choices = QUESTIONS[r["item"]]["choices"]
        per_char = [s / len(c) for s, c in zip(r["scores"], choices)]
        assert r["accuracy_norm"] == float(per_char.index(max(per_char)) == r["answer"])
    metrics = {p["metric"] for p in map(json.loads, (out / "points.jsonl").read_text().splitlines())}
    assert {"helpfulness", "accuracy", "accuracy_norm"} <= metrics
    config = json.loads((out / "config.json").read_text())
    assert config["tasks"][0]["lm_eval"]["task"] == "qa_local"


@pytest.mark.slow
def test_loglikelihoods_match_lm_evals_steered_model(embedded, task_dir, tmp_path):
    """The sweep's per-option log-likelihoods at r = 8 (layers 8–15) against lm-eval's own
    ``steered`` model loading the embedded model's safetensors folder; acc and acc_norm per question."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from repe_tradeoff.models.loading import default_model_dir
    from repe_tradeoff.vectors.vector import SteeringVector
    from repe_tradeoff.workflows.sweep import SweepPlan, run_config, run_sweep

    model, tokenizer = embedded
    g = torch.Generator().manual_seed(3)
    layers, norm = list(range(8, 16)), 8.0
    vector = SteeringVector({layer: torch.randn(model.config.hidden_size, generator=g) for layer in layers}).normalized()
    task = lm_eval_task("qa_local", task_dir)
    plan = SweepPlan(norms=[-norm, 0.0, norm], tasks=[task], layers=layers, chunk_size=4, batch_size=64)
    run_sweep(model, tokenizer, vector, plan, tmp_path / "run",
              config=run_config(plan, vector, model_name="default", model_revision=None, dtype="float32"))
    ours = {r["item"]: r for r in map(json.loads, (tmp_path / "run" / "items.jsonl").read_text().splitlines())
            if r["norm"] == norm}

    steer = vector.to_lm_eval(tmp_path / "steer.pt", model, norm)
    result = lm_eval.simple_evaluate(
        model="steered", model_args=f"pretrained={default_model_dir()},steer_path={steer},dtype=float32",
        tasks=["qa_local"], task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        batch_size=8, device="cpu", log_samples=True)
    samples = result["samples"]["qa_local"]
    assert len(samples) == len(QUESTIONS)
    worst = 0.0
    for sample in samples:
        mine = ours[sample["doc_id"]]
        theirs = [resp[0] for resp in sample["filtered_resps"]]
        worst = max(worst, max(abs(a - b) for a, b in zip(mine["scores"], theirs)))
        assert mine["accuracy"] == sample["acc"] and mine["accuracy_norm"] == sample["acc_norm"]
        softmax = [math.exp(s) / sum(math.exp(t) for t in theirs) for s in theirs]
        assert mine["helpfulness"] == pytest.approx(softmax[mine["answer"]], abs=1e-3)
    assert worst <= 1e-3
    assert result["results"]["qa_local"]["acc,none"] == pytest.approx(
        sum(r["accuracy"] for r in ours.values()) / len(ours))


def test_benchmark_comparison_counts_by_hand():
    from benchmarks.bench_lm_eval import compare

    records = {(8.0, 0): {"scores": [-1.0, -2.0], "accuracy": 1.0, "accuracy_norm": 0.0},
               (8.0, 1): {"scores": [-3.0, -0.5], "accuracy": 0.0, "accuracy_norm": 1.0}}
    samples = {0: {"filtered_resps": [["-1.0004", "False"], ["-2.0", "False"]], "acc": 1.0, "acc_norm": 1.0},
               1: {"filtered_resps": [["-0.2", "False"], ["-0.5", "True"]], "acc": 1.0, "acc_norm": 1.0}}
    c = compare(records, samples, 8.0)
    assert c["max_abs_diff"] == pytest.approx(2.8) and c["median_abs_diff"] == pytest.approx(0.0002)
    assert (c["same_argmax"], c["same_acc"], c["same_acc_norm"]) == (1, 1, 1)
    assert (c["acc_ours"], c["acc_lm_eval"], c["acc_norm_ours"]) == (0.5, 1.0, 0.5)
