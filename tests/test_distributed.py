"""Data-parallel sweeps: `accelerate launch` with 2 CPU processes (gloo) gives the single-process
records, in the same order, with every number equal to float32 rounding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, embedded):
    """A tiny random Llama with the embedded model's tokenizer, saved like any local model."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from repe_tradeoff.vectors.vector import SteeringVector

    folder = tmp_path_factory.mktemp("tiny")
    tok = embedded.tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_key_value_heads=2, num_hidden_layers=4, max_position_embeddings=512)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    g = torch.Generator().manual_seed(3)
    SteeringVector({1: torch.randn(32, generator=g), 2: torch.randn(32, generator=g)}).normalized().save(folder / "v.safetensors")
    return folder


def _sweep(folder, out, *extra):
    cmd = [sys.executable, "-m", "repe_tradeoff", "-q", "sweep", "--model", str(folder / "model"),
           "--vector", str(folder / "v.safetensors"), "--norms=-2:2:1", "--alignment", "harmfulness",
           "--helpfulness", "basic-qa", "--limit", "10", "--chunk-size", "3", "--out", str(out), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _assert_same_files(a, b):
    """The same records in the same order; numbers equal to float32 rounding (reduction order varies
    with the thread count), everything else exactly."""
    for name in ("items.jsonl", "points.jsonl"):
        left = [json.loads(x) for x in (a / name).read_text().splitlines()]
        right = [json.loads(x) for x in (b / name).read_text().splitlines()]
        assert len(left) == len(right), name
        for x, y in zip(left, right):
            assert x.keys() == y.keys()
            for key, value in x.items():
                if isinstance(value, (float, list)) and not isinstance(value, bool):
                    assert value == pytest.approx(y[key], rel=1e-5, abs=1e-6), (name, key, x, y)
                else:
                    assert value == y[key], (name, key, x, y)


def test_two_processes_equal_one(tiny_folder, tmp_path):
    if shutil.which("accelerate") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")):
        pytest.skip("accelerate's launcher is not installed")
    _sweep(tiny_folder, tmp_path / "one")
    _sweep(tiny_folder, tmp_path / "two", "--processes", "2")
    _assert_same_files(tmp_path / "one", tmp_path / "two")
    # resume under 2 processes from a file whose chunks arrived out of order, with a torn tail
    lines = (tmp_path / "one" / "items.jsonl").read_text().splitlines(keepends=True)
    chunks: dict = {}
    for line in lines:
        rec = json.loads(line)
        chunks.setdefault((rec["task"], rec["chunk"]), []).append(line)
    keys = list(chunks)
    shuffled = "".join("".join(chunks[k]) for k in (keys[3], keys[0], keys[5])) + chunks[keys[1]][0][:25]
    three = tmp_path / "three"
    three.mkdir()
    shutil.copy(tmp_path / "one" / "config.json", three / "config.json")
    (three / "items.jsonl").write_text(shuffled)
    _sweep(tiny_folder, three, "--processes", "2")
    _assert_same_files(tmp_path / "one", three)
    # the chunks copied from the single-process run are kept as they were, byte for byte
    kept = "".join("".join(chunks[k]) for k in (keys[0], keys[3], keys[5]))
    got = [line for line in (three / "items.jsonl").read_text().splitlines(keepends=True)
           if (json.loads(line)["task"], json.loads(line)["chunk"]) in (keys[0], keys[3], keys[5])]
    assert "".join(got) == kept
