"""Bad inputs through the real CLI: a non-zero exit and one message naming the culprit and the fix.

Every case runs ``python -m repe_tradeoff ARGS`` in a process of its own and checks that

* the exit status is non-zero,
* stderr holds no traceback,
* the message is one paragraph (a single ``error:`` line, then at most the ``--debug`` hint),
* it names the offending thing (file, key or value) and hints at the fix.

Starting Python, torch and transformers costs about five seconds, so by default the cases run
in processes forked from one warmed-up interpreter that executes ``python -m repe_tradeoff``
exactly as the interpreter would (``runpy``, same argv, same exit status, same stderr).
``test_forked_runs_match_plain_subprocesses`` checks that on a few cases, and
``REPE_TRADEOFF_PLAIN_CLI=1`` runs every case as a plain ``[sys.executable, "-m", ...]``.

The corpus is ``tests/bad_inputs/`` (copied to a temporary folder first); the steering vectors
and the tiny model are written by the fixtures below.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from repe_tradeoff.workflows.grid import parse_norms
from tests.helpers import Result, cli_env, error_message, run_plain, save_tiny_model

BAD = Path(__file__).parent / "bad_inputs"
PLAIN = os.environ.get("REPE_TRADEOFF_PLAIN_CLI") == "1"


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # with {bad}, {tmp}, {tiny}, {vec} placeholders
    names: tuple[str, ...]  # the offending file / key / value, as the message must name it
    hint: tuple[str, ...]  # words of the fix the message must suggest
    no_out: str | None = None  # a --out folder that must not be created


def _sweep(out: str, *extra: str) -> tuple[str, ...]:
    # --norms repeats once per --vector, so a case's own grid replaces the default one
    grid = () if any(e.startswith("--norms") for e in extra) else ("--norms", "-1,0,1")
    return ("sweep", "--out", f"{{tmp}}/{out}", "--vector", "{vec}/ok.safetensors", "--model", "{tiny}",
            *grid, "--limit", "2", *extra)


def _predict(out: str, *extra: str) -> tuple[str, ...]:
    return ("predict", "--out", f"{{tmp}}/{out}", "--vector", "{vec}/ok.safetensors", "--model", "{tiny}",
            "--helpfulness", "basic-qa", "--limit", "2", *extra)


def _generate(vector: str) -> tuple[str, ...]:
    return ("generate", "hello", "--vector", vector, "--model", "{tiny}", "--max-new-tokens", "2")


CASES = [
    # ---- models
    Case("model: missing path", ("layers", "--model", "{tmp}/no/such/model"),
         ("no/such/model",), ("does not exist", "check the path")),
    Case("model: unknown hub id, offline", ("layers", "--model", "repe-tradeoff-tests/no-such-model"),
         ("repe-tradeoff-tests/no-such-model",), ("offline", "pass a local folder")),
    Case("model: folder that is not a model", ("layers", "--model", "{bad}/not_a_model"),
         ("not_a_model", "no config.json"), ("save_pretrained",)),
    Case("model: folder without weights or tokenizer", ("layers", "--model", "{bad}/model_without_weights"),
         ("model_without_weights",), ("complete causal language model",)),
    Case("model: a file inside a model folder", ("layers", "--model", "{tiny}/config.json"),
         ("config.json", "is a file"), ("pass the folder",)),
    Case("model: .gguf path that does not exist", ("layers", "--model", "{tmp}/missing.gguf"),
         ("missing.gguf",), ("check the path",)),
    Case("model: text file named .gguf", ("layers", "--model", "{bad}/fake_model.gguf"),
         ("fake_model.gguf",), ("gguf",)),
    Case("model: truncated GGUF file", ("layers", "--model", "{tmp}/truncated.gguf"),
         ("truncated.gguf",), ("complete gguf file",)),
    Case("model: unknown --dtype", ("extract", "--model", "{tiny}", "--layers", "1", "--dtype", "float8",
                                    "--out", "{tmp}/dtype.safetensors"),
         ("'float8'", "dtype"), ("float32, bfloat16, float16",)),
    # ---- steering vectors
    Case("vector: hidden size 7 for a 32-wide model", _generate("{vec}/hidden7.safetensors"),
         ("hidden7.safetensors", "hidden size 7", "32"), ("re-extract",)),
    Case("vector: layer 99 for a 4-layer model", _generate("{vec}/layer99.safetensors"),
         ("layer99.safetensors", "99", "4 layers"), ("re-extract",)),
    Case("vector: NaN values", _generate("{vec}/nan.safetensors"),
         ("nan.safetensors", "NaN"), ("re-extract",)),
    Case("vector: all zeros", _generate("{vec}/zero.safetensors"),
         ("zero.safetensors", "all zeros"), ("re-extract",)),
    Case("vector: text file named .safetensors", _generate("{bad}/vector_text.safetensors"),
         ("vector_text.safetensors", "not a safetensors"), ("repe-tradeoff extract",)),
    Case("vector: pickle named .safetensors", _generate("{vec}/pickle.safetensors"),
         ("pickle.safetensors", "not a safetensors"), ("repe-tradeoff extract",)),
    Case("vector: newer format version", _generate("{vec}/format99.safetensors"),
         ("format99.safetensors", "version 99"), ("upgrade repe-tradeoff",)),
    Case("vector: unreadable format version", _generate("{vec}/format_abc.safetensors"),
         ("format_abc.safetensors", "'abc'"), ("re-extract",)),
    Case("vector: metadata header not JSON", _generate("{vec}/bad_metadata.safetensors"),
         ("bad_metadata.safetensors", "metadata"), ("re-extract",)),
    Case("vector: tensors not named layer.N", _generate("{vec}/not_layers.safetensors"),
         ("not_layers.safetensors", "'weight'"), ("layer.N",)),
    Case("vector: file does not exist", _generate("{tmp}/nowhere.safetensors"),
         ("nowhere.safetensors", "does not exist"), ("repe-tradeoff extract",)),
    # ---- datasets (they fail before the model is loaded and before the run folder is made)
    Case("dataset: malformed JSON on line 3", _sweep("r1", "--helpfulness", "{bad}/datasets/malformed_line3.jsonl"),
         ("malformed_line3.jsonl", "line 3"), ("fix or delete this line",), "r1"),
    Case("dataset: empty file", _sweep("r2", "--helpfulness", "{bad}/datasets/empty.jsonl"),
         ("empty.jsonl", "empty"), ("add at least one",), "r2"),
    Case("dataset: answer index out of range", _sweep("r3", "--helpfulness", "{bad}/datasets/answer_out_of_range.jsonl"),
         ("answer_out_of_range.jsonl", "line 1", "'answer'", "index 5"), ("valid: 0..1",), "r3"),
    Case("dataset: duplicate choices", _sweep("r4", "--helpfulness", "{bad}/datasets/duplicate_choices.jsonl"),
         ("duplicate_choices.jsonl", "'choices'", "'apple'"), ("fix the value of 'choices'",), "r4"),
    Case("dataset: empty strings", _sweep("r5", "--alignment", "{bad}/datasets/empty_strings"),
         ("empty_strings/eval.jsonl", "'aligned'"), ("must not be empty",), "r5"),
    Case("dataset: unknown task name", _sweep("r6", "--helpfulness", "trivia"),
         ("'trivia'",), ("basic-qa",), "r6"),
    # ---- norm grids and layers
    Case("grid: empty", _sweep("g1", "--helpfulness", "basic-qa", "--norms="),
         ("--norms", "empty norm grid"), ("e.g.",), "g1"),
    Case("grid: stop below start", _sweep("g2", "--helpfulness", "basic-qa", "--norms", "5:1:1"),
         ("'5:1:1'", "stop is below start"), ("`1:5:1`",), "g2"),
    Case("grid: not a number", _sweep("g3", "--helpfulness", "basic-qa", "--norms", "-1,zero,1"),
         ("'-1,zero,1'", "not a number"), ("e.g.",), "g3"),
    Case("grid: zero step", _sweep("g4", "--helpfulness", "basic-qa", "--norms", "0:1:0"),
         ("'0:1:0'",), ("positive",), "g4"),
    Case("grid: infinite norm", _sweep("g5", "--helpfulness", "basic-qa", "--norms", "0,inf"),
         ("'0,inf'",), ("finite",), "g5"),
    Case("layers: out of range", _sweep("l1", "--helpfulness", "basic-qa", "--layers", "9"),
         ("'9'", "out of range"), ("layers 0-3",), "l1"),
    Case("layers: malformed", _sweep("l2", "--helpfulness", "basic-qa", "--layers", "2-x"),
         ("'2-x'",), ("e.g.",), "l2"),
    Case("layers: backwards range", _sweep("l3", "--helpfulness", "basic-qa", "--layers", "3-1"),
         ("'3-1'",), ("low-high",), "l3"),
    Case("layers: one the vector lacks", _sweep("l4", "--helpfulness", "basic-qa", "--layers", "2"),
         ("[2]",), ("it has [1]",), "l4"),
    Case("layers: out of range at extract", ("extract", "--model", "{tiny}", "--layers", "99", "--out", "{tmp}/v.safetensors"),
         ("'99'",), ("layers 0-3",)),
    Case("options: ablate with a grid", _sweep("o1", "--helpfulness", "basic-qa", "--operator", "ablate", "--norms", "-1:1:1"),
         ("ablate",), ("ablate-then-add",), "o1"),
    Case("options: unknown format", _sweep("o2", "--helpfulness", "basic-qa", "--format", "essay"),
         ("--format", "'essay'"), ("'cloze' or 'letter'",), "o2"),
    Case("options: nothing to measure", _sweep("o3"),
         ("nothing to measure",), ("--alignment", "--helpfulness"), "o3"),
    # ---- predict (each fails before the model loads and before the run folder is made)
    Case("predict: grid without room for the probe",
         _predict("p1", "--norms", "-1:1:1", "--probe", "1"),
         ("--probe", "|r| = 1", "±2"), ("widen --norms", "smaller --probe", "at most 0.5"), "p1"),
    Case("predict: no residual norm for the default probe", _predict("p2", "--norms", "-4:4:1"),
         ("residual norm",), ("give --probe H",), "p2"),
    Case("predict: a negative probe", _predict("p3", "--norms", "-4:4:1", "--probe", "-1"),
         ("--probe -1",), ("positive",), "p3"),
    Case("predict: the generate scorer", _predict("p4", "--norms", "-4:4:1", "--scorer", "generate"),
         ("--scorer generate", "logit gap"), ("forced-choice or yes-no",), "p4"),
    # ---- configs
    Case("config: unknown key", ("run", "{bad}/configs/unknown_key.yaml"),
         ("unknown_key.yaml", "unknown key `norm`"), ("allowed:", "norms")),
    Case("config: wrong type", ("run", "{bad}/configs/wrong_type.yaml"),
         ("wrong_type.yaml", "`limit`", "'many'"), ("valid integer",)),
    Case("config: conflicting options", ("run", "{bad}/configs/ablate_with_grid.yaml"),
         ("ablate_with_grid.yaml", "operator `ablate`"), ("ablate-then-add",)),
    Case("config: missing file", ("run", "{tmp}/missing.yaml"),
         ("missing.yaml", "does not exist"), ("examples/",)),
    Case("config: invalid YAML", ("run", "{bad}/configs/invalid_yaml.yaml"),
         ("invalid_yaml.yaml", "not valid YAML", "line 2"), ("fix the",)),
    Case("config: not a mapping", ("run", "{bad}/configs/not_a_mapping.yaml"),
         ("not_a_mapping.yaml", "list"), ("mapping of keys",)),
    Case("config: not UTF-8", ("run", "{bad}/configs/not_utf8.yaml"),
         ("not_utf8.yaml", "not UTF-8"), ("save it as UTF-8",)),
    # ---- run folders and outputs
    Case("run folder: --out is a file", _sweep("a_file", "--helpfulness", "basic-qa"),
         ("a_file", "is a file"), ("folder",)),
    Case("run folder: corrupt config.json", _sweep("corrupt_run", "--helpfulness", "basic-qa"),
         ("corrupt_run/config.json",), ("delete", "another --out folder")),
    Case("run folder: locked by a live process", _sweep("locked_run", "--helpfulness", "basic-qa"),
         ("locked_run", "in use by process", "{host}:{pid}"), ("wait for it to finish",)),
    Case("extract: --out is a folder", ("extract", "--model", "{tiny}", "--layers", "1", "--out", "{bad}/not_a_model"),
         ("not_a_model", "is a folder"), ("vector.safetensors",)),
    # ---- the layer atlas
    Case("atlas: band width not a number", ("atlas", "--model", "{tiny}", "--bands", "1,x", "--out", "{tmp}/at1"),
         ("--bands", "1,x"), ("whole numbers", "1,4,8"), no_out="at1"),
    Case("atlas: band wider than the layers", ("atlas", "--model", "{tiny}", "--bands", "1,8", "--out", "{tmp}/at2"),
         ("--bands", "1,8"), ("between 1 and the 4 layers",), no_out="at2"),
    Case("atlas: band width zero", ("atlas", "--model", "{tiny}", "--bands", "0", "--out", "{tmp}/at3"),
         ("--bands", "0"), ("between 1",), no_out="at3"),
    Case("atlas: layers out of range", ("atlas", "--model", "{tiny}", "--layers", "0-40", "--out", "{tmp}/at4"),
         ("0-40", "out of range"), ("layers 0-3",), no_out="at4"),
    Case("atlas: generate scorer", ("atlas", "--model", "{tiny}", "--scorer", "generate", "--out", "{tmp}/at5"),
         ("--scorer", "generate"), ("forced-choice or yes-no",), no_out="at5"),
    Case("atlas: budget above 1", ("atlas", "--model", "{tiny}", "--budget", "7", "--out", "{tmp}/at6"),
         ("--budget", "7"), ("between 0 and 1",), no_out="at6"),
    # ---- answers taken out of a run
    Case("fit: negative budget", ("fit", "{tmp}/old_fits", "--max-helpfulness-loss", "-0.1"),
         ("-0.1",), ("must be ≥ 0",)),
    Case("report: fits.json of another format version", ("report", "{tmp}/old_fits"),
         ("fits.json", "format_version 99"), ("repe-tradeoff fit",), no_out="old_fits/report.html"),
    Case("export: infinite norm", ("export-lm-eval", "--vector", "{vec}/ok.safetensors", "--norm", "inf",
                                   "--model", "{tiny}", "--out", "{tmp}/steer_inf.pt"),
         ("norm inf",), ("finite",), no_out="steer_inf.pt"),
]


# --------------------------------------------------------------------------- the inputs


def _write_vectors(folder: Path) -> None:
    from safetensors.torch import save_file

    from repe_tradeoff.vectors.vector import SteeringVector

    folder.mkdir()
    meta = {"format_version": "1", "metadata": "{}"}
    SteeringVector({1: torch.ones(32)}, {"model": "tiny"}).save(folder / "ok.safetensors")
    SteeringVector({1: torch.ones(7)}).save(folder / "hidden7.safetensors")
    SteeringVector({99: torch.ones(32)}).save(folder / "layer99.safetensors")
    # the class refuses NaN and zeros, so these are written directly
    save_file({"layer.1": torch.full((32,), float("nan"))}, folder / "nan.safetensors", metadata=meta)
    save_file({"layer.1": torch.zeros(32)}, folder / "zero.safetensors", metadata=meta)
    save_file({"layer.1": torch.ones(32)}, folder / "format99.safetensors", metadata={**meta, "format_version": "99"})
    save_file({"layer.1": torch.ones(32)}, folder / "format_abc.safetensors", metadata={**meta, "format_version": "abc"})
    save_file({"layer.1": torch.ones(32)}, folder / "bad_metadata.safetensors", metadata={**meta, "metadata": "{oops"})
    save_file({"weight": torch.ones(32)}, folder / "not_layers.safetensors", metadata=meta)
    (folder / "pickle.safetensors").write_bytes(pickle.dumps({"layer.1": [1.0] * 32}))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli_errors")
    bad = root / "bad_inputs"
    shutil.copytree(BAD, bad)  # so that nothing is ever written into the repository
    tmp = root / "work"
    tmp.mkdir()
    _write_vectors(root / "vectors")
    tiny = save_tiny_model(root / "tiny")
    (tmp / "a_file").write_text("a file where a run folder should be\n")
    (tmp / "corrupt_run").mkdir()
    (tmp / "corrupt_run" / "config.json").write_text('{"config_hash": "abc", ')
    (tmp / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")  # the magic, then too few bytes
    (tmp / "old_fits").mkdir()
    (tmp / "old_fits" / "points.jsonl").write_text(
        '{"task": "basic-qa", "kind": "helpfulness", "metric": "p_correct", "norm": 0.0, "mean": 0.5, "stderr": 0.1, "n": 2}\n')
    (tmp / "old_fits" / "fits.json").write_text('{"format_version": 99, "tasks": {}}')
    (tmp / "locked_run").mkdir()
    (tmp / "locked_run" / ".lock").write_text(f"{socket.gethostname()}:{os.getpid()}")  # this live process
    return {"bad": str(bad), "tmp": str(tmp), "tiny": str(tiny), "vec": str(root / "vectors"),
            "host": socket.gethostname(), "pid": str(os.getpid())}


def _expand(parts, inputs) -> list[str]:
    return [p.format(**inputs) for p in parts]


# --------------------------------------------------------------------------- running the CLI

# Runs in a child process: imports what the cases import, then reads one job per
# line ({"args", "cwd", "stdout", "stderr"}), forks, and in the child executes the module as the
# interpreter's -m would; the parent answers {"rc": exit status} per job.
_FORK_SERVER = r"""
import json, os, runpy, sys, traceback

import repe_tradeoff.cli  # noqa: F401
from repe_tradeoff.errors import RepeTradeoffError  # noqa: F401
# what loading the tiny llama test model imports lazily
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(job["cwd"])
            for fd, name, mode in ((0, os.devnull, os.O_RDONLY), (1, job["stdout"], os.O_WRONLY | os.O_CREAT),
                                   (2, job["stderr"], os.O_WRONLY | os.O_CREAT)):
                new = os.open(name, mode, 0o644)
                os.dup2(new, fd)
                os.close(new)
            sys.argv = ["-m", *job["args"]]
            try:
                runpy.run_module("repe_tradeoff", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    code = exit_.code or 0
                else:
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


def run_forked(jobs: list[list[str]], cwd: str, logs: Path, timeout: float = 180) -> list[Result]:
    logs.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, args in enumerate(jobs):
        lines.append(json.dumps({"args": args, "cwd": cwd, "stdout": str(logs / f"{i}.out"),
                                 "stderr": str(logs / f"{i}.err")}))
    proc = subprocess.run([sys.executable, "-c", _FORK_SERVER], check=False, input="\n".join(lines) + "\n", env=cli_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
    answers = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert answers and answers[0] == {"ready": True}, proc.stderr[-3000:]
    codes = [a["rc"] for a in answers[1:]]
    assert len(codes) == len(jobs), proc.stderr[-3000:]
    return [Result(rc, (logs / f"{i}.out").read_text(errors="replace"), (logs / f"{i}.err").read_text(errors="replace"))
            for i, rc in enumerate(codes)]


DEBUG = ("--debug", "layers", "--model", "{tmp}/no/such/model")


@pytest.fixture(scope="module")
def results(inputs, tmp_path_factory) -> dict[str, Result]:
    """Every case, plus the --debug run, keyed by case id."""
    jobs = [_expand(case.args, inputs) for case in CASES] + [_expand(DEBUG, inputs)]
    if PLAIN:
        out = [r for i in range(0, len(jobs), 2) for r in run_plain(jobs[i : i + 2], inputs["tmp"])]
    else:
        out = run_forked(jobs, inputs["tmp"], tmp_path_factory.mktemp("cli_logs"))
    return {**{case.id: r for case, r in zip(CASES, out)}, "--debug": out[-1]}


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_message(case: Case, results, inputs):
    r = results[case.id]
    assert r.rc != 0, f"exit status 0 for a bad input\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    message = error_message(r.stderr)
    assert "(top level)" not in message, message
    low = message.lower()
    for fragment in _expand(case.names, inputs):
        assert fragment.lower() in low, f"message does not name {fragment!r}: {message}"
    for fragment in _expand(case.hint, inputs):
        assert fragment.lower() in low, f"message does not hint {fragment!r}: {message}"
    if case.no_out:
        assert not (Path(inputs["tmp"]) / case.no_out).exists(), "a failed start left a run folder behind"


def test_refusals_leave_the_inputs_alone(results, inputs):
    """The corrupt and the locked run folder are refused, not repaired or taken over."""
    tmp = Path(inputs["tmp"])
    assert (tmp / "corrupt_run" / "config.json").read_text() == '{"config_hash": "abc", '
    assert sorted(p.name for p in (tmp / "locked_run").iterdir()) == [".lock"]
    assert (tmp / "a_file").is_file()


def test_debug_shows_the_traceback(results):
    r = results["--debug"]
    assert r.rc != 0
    assert "Traceback" in r.stderr and "ModelError" in r.stderr


@pytest.mark.skipif(PLAIN, reason="every case already ran as a plain subprocess")
def test_forked_runs_match_plain_subprocesses(results, inputs):
    """The fast runner sees what a user sees: same exit status, same stderr."""
    ids = ("grid: stop below start", "vector: NaN values", "config: invalid YAML")
    cases = [next(c for c in CASES if c.id == cid) for cid in ids]
    plain = run_plain([_expand(c.args, inputs) for c in cases], inputs["tmp"])
    for cid, r in zip(ids, plain):
        assert (r.rc, r.stderr) == (results[cid].rc, results[cid].stderr), cid


def test_unsorted_and_duplicated_norms_are_normalised():
    """Not errors: a comma list in any order, with repeats and float noise, becomes a sorted grid."""
    assert parse_norms("3,1,1,-2,0.30000000000000004,0.3") == [-2.0, 0.3, 1.0, 3.0]
    assert parse_norms(" 2, -2 ,0,") == [-2.0, 0.0, 2.0]
    assert parse_norms([1.0, -1.0, 1.0, 0.0]) == [-1.0, 0.0, 1.0]
    assert parse_norms("-0.0,0") == [0.0] and str(parse_norms("-0.0")[0]) == "0.0"
