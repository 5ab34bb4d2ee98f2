"""Memory measurements: the demo's peak RSS, its heaviest scoring step, each method in a
fresh process."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import GiB, rss_kib, timed
from benchmarks.inputs import Bench
from benchmarks.methods import MAIN_METHODS, run_ours, sweep_plan

ROOT = Path(__file__).resolve().parent.parent


def demo_memory(full: bool) -> dict:
    """Max RSS of `repe-tradeoff demo` (`--quick` unless ``full``) under /usr/bin/time -v."""
    exe = ROOT / ".venv" / "bin" / "repe-tradeoff"
    if not exe.exists():
        exe = Path(sys.executable).with_name("repe-tradeoff")
    out_dir = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    flags = [] if full else ["--quick"]
    timer = Path("/usr/bin/time")
    cmd = ([str(timer), "-v"] if timer.exists() else []) + [str(exe), "demo", "--out", str(out_dir)] + flags
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
    seconds = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    shutil.rmtree(out_dir, ignore_errors=True)
    shown = ["/usr/bin/time", "-v", ".venv/bin/repe-tradeoff", "demo"] + flags
    return {"command": " ".join(shown + ["--out", "/tmp/bench-demo"]), "variant": "full" if full else "quick",
            "returncode": proc.returncode, "seconds": seconds, "max_rss_kib": int(m.group(1)) if m else None,
            "stderr_tail": proc.stderr.strip().splitlines()[-3:] if proc.returncode else []}


def demo_chunk_memory(b: Bench) -> dict:
    """Memory of the demo's heaviest scoring step: one alignment chunk (forced-choice responses) at
    the SweepPlan defaults, and the size of one full-vocabulary logits tensor over its rows."""
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.tasks.choice import AlignmentTask

    behavior = load_behavior("harmfulness")
    task = AlignmentTask(behavior.name, list(behavior.items)[:16])
    sb = dataclasses.replace(b, task=task, seqs=task.sequences(b.tokenizer))
    plan = sweep_plan(sb)
    n_rows = len(plan.norms) + (0.0 not in plan.norms)
    step = max(1, plan.batch_size // n_rows)
    lens_c = [len(c) for c in sb.seqs.continuations]
    vocab = b.model.get_output_embeddings().weight.shape[0]
    m, _ = timed(lambda: run_ours(sb))
    return {"items": 16, "sequences": len(sb.seqs.prompts), "norms": len(plan.norms),
            "batch_rows": step * n_rows, "max_continuation": max(lens_c), "vocab": vocab,
            "one_logits_tensor_gib": step * n_rows * (max(lens_c) - 1) * vocab * 4 / GiB,
            "peak_rss_mib": m["peak_kib"] / 1024, "above_start_mib": (m["peak_kib"] - m["before_kib"]) / 1024,
            "seconds": m["seconds"]}


def isolated_memory(spec: dict) -> dict:
    """Each method's peak RSS in a fresh process (``python -m benchmarks.memory SPEC METHOD``)."""
    out = {}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        for method in MAIN_METHODS:
            cmd = [sys.executable, "-m", "benchmarks.memory", f.name, method]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(), check=False)
            if proc.returncode != 0:
                out[method] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
                print(f"  isolated {method}: failed: {out[method]['error']}", flush=True)
                continue
            out[method] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  fresh process {method:24s} peak {out[method]['process_peak_kib'] / 1024:6.0f} MiB "
                  f"(method {out[method]['peak_kib'] / 1024:6.0f} MiB)", flush=True)
    finally:
        os.unlink(f.name)
    return out


def _worker(spec_path: str, method: str) -> None:
    """Fresh process: load, warm up, run one method once; print its time and peak RSS as JSON.

    VmHWM is read, not ``ru_maxrss``: a child's ``ru_maxrss`` also counts the parent's resident
    memory at the time it was spawned (Linux keeps the pre-exec high-water mark).
    """
    import torch

    from benchmarks.inputs import setup
    from benchmarks.methods import capture_same_batches, loop_norms, method_fns, warm_up

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    b = setup(spec["questions"], spec["norms"], spec["span"], spec["layers"])
    warm_up(b)
    same = capture_same_batches(b) if method == "limit_same_batches" else None
    fn = method_fns(b, spec["peer_batch"], same, loop_norms(b, spec["loop_norms"]), [])[method]
    setup_hwm = rss_kib()[1]
    m, _ = timed(fn)
    print(json.dumps({"method": method, **m, "setup_hwm_kib": setup_hwm,
                      "process_peak_kib": max(setup_hwm, m["peak_kib"])}))


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
