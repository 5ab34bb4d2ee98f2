"""The public API: `import repe_tradeoff as rt` is cheap, complete, and agrees with the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import repe_tradeoff as rt
from tests.helpers import cli_env, random_vector


def test_import_is_cheap_and_every_exported_name_resolves():
    code = ("import sys, repe_tradeoff as rt\nassert 'torch' not in sys.modules, 'import repe_tradeoff loaded torch'\n"
            "missing = [n for n in rt.__all__ if getattr(rt, n, None) is None]\nassert not missing, missing\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_library_error_is_a_repe_tradeoff_error():
    import importlib
    import pkgutil

    classes = set()
    for info in pkgutil.walk_packages(rt.__path__, "repe_tradeoff."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        classes |= {obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, Exception)
                    and obj.__module__.startswith("repe_tradeoff")}
    assert len(classes) >= 10
    # caught where they are raised, never a caller's: CacheUnwritable, and private control flow (_Read)
    public = {c for c in classes if c.__name__ != "CacheUnwritable" and not c.__name__.startswith("_")}
    assert all(issubclass(c, rt.RepeTradeoffError) for c in public), \
        sorted(c.__name__ for c in public if not issubclass(c, rt.RepeTradeoffError))


def test_sweep_in_python_writes_what_the_command_writes(tiny, tiny_dir, tmp_path):
    vector = random_vector((1, 2))
    path = vector.save(tmp_path / "v.safetensors")
    args = dict(norms="-2,0,2", alignment="harmfulness", helpfulness="basic-qa", limit=3)
    run = rt.sweep(tiny.model, tiny.tokenizer, vector, out=tmp_path / "py", **args)
    cmd = [sys.executable, "-m", "repe_tradeoff", "-q", "sweep", "--model", str(tiny_dir), "--vector", str(path),
           "--norms", "-2,0,2", "--alignment", "harmfulness", "--helpfulness", "basic-qa", "--limit", "3",
           "--out", str(tmp_path / "cli")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]

    def points(folder):
        return sorted((r["task"], r["metric"], r["norm"], r["mean"]) for r in
                      map(json.loads, (folder / "points.jsonl").read_text().splitlines()))
    assert points(run.path) == points(tmp_path / "cli")
    frame = run.points()
    assert {"norm", "metric", "mean", "task"} <= set(frame.columns)
    assert sorted(frame["norm"].unique()) == [-2.0, 0.0, 2.0]


def test_steer_adds_r_times_v_to_the_layer_output(tiny):
    """rt.steer against a plain forward hook that adds r·v to block 1's output."""
    vector = random_vector((1,))
    ids = torch.tensor([[5, 9, 11, 3]])
    layer = tiny.model.model.layers[1]

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden + 2.5 * vector[1]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
    handle = layer.register_forward_hook(add)
    try:
        with torch.no_grad():
            expected = tiny.model(ids).logits
    finally:
        handle.remove()
    with rt.steer(tiny.model, vector, norm=2.5), torch.no_grad():
        got = tiny.model(ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(tiny.model(ids).logits, expected, atol=1e-3)  # the hook is gone


def test_fit_of_a_folder_that_is_no_run_is_a_library_error(tmp_path):
    with pytest.raises(rt.RepeTradeoffError, match="not a run folder"):
        rt.fit(tmp_path / "nowhere")
