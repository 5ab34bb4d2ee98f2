"""Benchmark of lm-eval tasks as helpfulness: one batched sweep of a local lm-eval task over a grid
of norms against lm-evaluation-harness's own ``steered`` model, which needs one run per norm.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_lm_eval            # about 15 minutes
    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_lm_eval --quick    # smoke version

The task is the first 40 basic-qa questions written out as JSONL under a local task YAML
(``dataset_path: json``). The vector is the pca direction of the built-in harmfulness pairs on
blocks 8–15 of the embedded model. Each lm-eval run is the command a user types
(``python -m lm_eval run --model steered …``, a fresh process: imports, task index, model load,
evaluation) with a vector exported by ``export-lm-eval`` at one norm; the 81 runs of a full grid
are estimated from a few (the time of a run does not depend on the norm). Its per-option
log-likelihoods are compared with the sweep's at the same norm. Writes ``RESULTS-lm-eval.md`` and
``results-lm-eval.json`` to ``--out-dir`` (default: benchmarks/).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASK = "basic_qa_local"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--questions", type=int, default=40)
    a("--norms", default="-20:20:0.5", help="the sweep's grid (81 norms, r = 8 among them)")
    a("--check-norms", default="8,-20,20", help="norms of the timed lm-eval runs, compared with the sweep")
    a("--layers", default="8-15")
    a("--batch-size", type=int, default=8, help="lm-eval's --batch_size")
    a("--threads", type=int, default=1, help="torch threads for both (1: see bench_sweep)")
    a("--sweep-reps", type=int, default=1)
    a("--quick", action="store_true", help="8 questions, 9 norms, one lm-eval run")
    a("--out-dir", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.questions, args.norms, args.check_norms = 8, "-8:8:2", "8"
    if args.out_dir is None:
        args.out_dir = Path(tempfile.gettempdir()) / "repe-bench-lm-eval-quick" if args.quick else HERE
    return args


def write_task(folder: Path, n: int) -> Path:
    from repe_tradeoff.data import load_helpfulness

    folder.mkdir(parents=True, exist_ok=True)
    questions = load_helpfulness("basic-qa").questions[:n]
    data = folder / f"{TASK}.jsonl"
    data.write_text("".join(json.dumps(q.model_dump()) + "\n" for q in questions))
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return folder


def sweep_once(lm, vector, layers, grid, include: Path, out: Path) -> tuple[float, float, dict]:
    """(seconds to build the task, seconds of the sweep, records by (norm, item))."""
    from repe_tradeoff.tasks.lm_eval import lm_eval_task
    from repe_tradeoff.workflows.sweep import SweepPlan, run_config, run_sweep

    t0 = time.perf_counter()
    task = lm_eval_task(TASK, include)
    t1 = time.perf_counter()
    plan = SweepPlan(norms=grid, tasks=[task], layers=layers)
    config = run_config(plan, vector, model_name="default", model_revision=None, dtype="float32")
    run_sweep(lm.model, lm.tokenizer, vector, plan, out, config=config)
    t2 = time.perf_counter()
    records = {}
    for line in (out / "items.jsonl").read_text().splitlines():
        r = json.loads(line)
        records[(r["norm"], r["item"])] = r
    return t1 - t0, t2 - t1, records


def lm_eval_run(model_dir: Path, steer: Path, include: Path, out: Path, args) -> tuple[float, dict]:
    """One `lm_eval run` process: (seconds, {doc_id: sample})."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "steered",
           "--model_args", f"pretrained={model_dir},steer_path={steer},dtype=float32", "--tasks", TASK,
           "--include_path", str(include), "--batch_size", str(args.batch_size), "--device", "cpu",
           "--log_samples", "--output_path", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"lm_eval failed:\n{proc.stderr[-3000:]}")
    samples = {}
    for path in out.rglob(f"samples_{TASK}_*.jsonl"):
        for line in path.read_text().splitlines():
            s = json.loads(line)
            samples[s["doc_id"]] = s
    return seconds, samples


def lm_eval_in_process(model_dir: Path, steer: Path, include: Path, args):
    """lm-eval's steered model built once, and a function timing one evaluation with it: the
    cost of a run without its process start, task index and model load (a lower bound)."""
    import lm_eval
    from lm_eval.models.hf_steered import SteeredModel
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    model = SteeredModel(pretrained=str(model_dir), steer_path=str(steer), device="cpu", dtype="float32",
                         batch_size=args.batch_size)
    manager = TaskManager(include_path=str(include), include_defaults=False)
    setup = time.perf_counter() - t0

    def evaluate() -> float:
        t1 = time.perf_counter()
        lm_eval.simple_evaluate(model=model, tasks=[TASK], task_manager=manager)
        return time.perf_counter() - t1

    return setup, evaluate


def compare(records: dict, samples: dict, norm: float) -> dict:
    diffs, argmax, acc, acc_norm = [], 0, 0, 0
    for doc_id, s in samples.items():
        mine = records[(norm, doc_id)]
        theirs = [float(resp[0]) for resp in s["filtered_resps"]]
        diffs += [abs(a - b) for a, b in zip(mine["scores"], theirs)]
        argmax += max(range(len(theirs)), key=theirs.__getitem__) == max(
            range(len(theirs)), key=mine["scores"].__getitem__)
        acc += mine["accuracy"] == float(s["acc"])
        acc_norm += mine["accuracy_norm"] == float(s["acc_norm"])
    n = len(samples)
    return {"norm": norm, "n_docs": n, "max_abs_diff": max(diffs), "median_abs_diff": statistics.median(diffs),
            "same_argmax": argmax, "same_acc": acc, "same_acc_norm": acc_norm,
            "acc_ours": sum(records[(norm, d)]["accuracy"] for d in samples) / n,
            "acc_lm_eval": sum(float(s["acc"]) for s in samples.values()) / n,
            "acc_norm_ours": sum(records[(norm, d)]["accuracy_norm"] for d in samples) / n,
            "acc_norm_lm_eval": sum(float(s["acc_norm"]) for s in samples.values()) / n}


def main(argv=None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    import torch

    from benchmarks.harness import load_average, machine_info
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models.loading import default_model_dir, load_model, parse_layers
    from repe_tradeoff.tasks.lm_eval import lm_eval_version
    from repe_tradeoff.vectors.reading import extract
    from repe_tradeoff.workflows.grid import parse_norms

    if args.threads:
        torch.set_num_threads(args.threads)
    load_start, started = load_average(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-lm-eval-"))
    include = write_task(work / "tasks", args.questions)
    lm = load_model("default")
    layers = parse_layers(args.layers, lm.model.config.num_hidden_layers)
    pairs = [(p.aligned, p.misaligned) for p in load_behavior("harmfulness").pairs]
    vector, _ = extract(lm.model, lm.tokenizer, pairs, layers, method="pca")
    grid, checks = parse_norms(args.norms), [float(x) for x in args.check_norms.split(",")]
    missing = [r for r in checks if r not in grid]
    if missing:
        raise SystemExit(f"--check-norms {missing} are not on the grid {args.norms}")

    runs, sweeps, comparisons, records, evals = [], [], [], None, []
    setup, evaluate = lm_eval_in_process(default_model_dir(), vector.to_lm_eval(work / "steer.pt", lm.model, checks[0]),
                                         include, args)
    for i, norm in enumerate(checks):  # lm-eval runs and sweeps interleaved: a slow spell hits both
        evals.append(evaluate())
        print(f"lm-eval evaluation in this process: {evals[-1]:.1f} s", flush=True)
        steer = vector.to_lm_eval(work / f"steer{i}.pt", lm.model, norm)
        seconds, samples = lm_eval_run(default_model_dir(), steer, include, work / f"lm_eval{i}", args)
        runs.append({"norm": norm, "seconds": seconds, "load": load_average()})
        print(f"lm_eval run at r = {norm:g}: {seconds:.1f} s", flush=True)
        if len(sweeps) < args.sweep_reps:
            build, sweep, records = sweep_once(lm, vector, layers, grid, include, work / f"run{i}")
            sweeps.append({"build_seconds": build, "sweep_seconds": sweep, "load": load_average()})
            print(f"sweep of {len(grid)} norms: {build:.1f} s building + {sweep:.1f} s", flush=True)
        comparisons.append(compare(records, samples, norm))
        print(json.dumps(comparisons[-1]), flush=True)

    per_run = statistics.median(r["seconds"] for r in runs)
    ours = statistics.median(s["build_seconds"] + s["sweep_seconds"] for s in sweeps)
    results = {
        "command": " ".join(["HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_lm_eval",
                             *map(shlex.quote, sys.argv[1:])]),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "minutes": (time.perf_counter() - started) / 60, "machine": machine_info(load_start),
        "load_end": load_average(), "lm_eval_version": lm_eval_version(), "questions": args.questions,
        "norms": len(grid), "grid": args.norms, "layers": layers, "threads": args.threads,
        "batch_size": args.batch_size, "lm_eval_runs": runs, "sweeps": sweeps, "comparisons": comparisons,
        "lm_eval_per_run_seconds": per_run, "lm_eval_estimated_seconds": per_run * len(grid),
        "ours_seconds": ours, "ratio": ours / (per_run * len(grid)),
        "lm_eval_in_process_setup_seconds": setup, "lm_eval_in_process_eval_seconds": evals,
        "ratio_eval_only": ours / (statistics.median(evals) * len(grid)),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results-lm-eval.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "RESULTS-lm-eval.md").write_text(markdown(results))
    update_results_md(args.out_dir)
    print(f"→ {args.out_dir / 'RESULTS-lm-eval.md'}")


SECTION = "## lm-eval tasks as helpfulness"


def results_section(out_dir: Path) -> str:
    """The section RESULTS.md ends with: this benchmark's main numbers, from results-lm-eval.json."""
    path = out_dir / "results-lm-eval.json"
    if not path.exists():
        return ""
    r = json.loads(path.read_text())
    at8 = next((c for c in r["comparisons"] if c["norm"] == 8.0), r["comparisons"][0])
    return "\n".join([
        "", SECTION, "",
        (f"From `python -m benchmarks.bench_lm_eval` on {r['date']} (details: "
         "[`RESULTS-lm-eval.md`](RESULTS-lm-eval.md)): a local lm-eval task of the first "
         f"{r['questions']} basic-qa questions, pca harmfulness vector on blocks {r['layers'][0]}–{r['layers'][-1]}. "
         f"The sweep of {r['norms']} norms took {r['ours_seconds']:.0f} s; one `lm_eval --model steered` run "
         f"took {r['lm_eval_per_run_seconds']:.0f} s (median of {len(r['lm_eval_runs'])}), so {r['norms']} runs "
         f"≈ {r['lm_eval_estimated_seconds']:.0f} s: ratio **{r['ratio']:.3f}**. Against lm-eval's evaluation "
         f"alone (its model built once, no process per norm) the ratio is {r['ratio_eval_only']:.3f}. "
         f"Per-option log-likelihoods at r = {at8['norm']:g} differ from lm-eval's by at most "
         f"{at8['max_abs_diff']:.1e} (same acc and acc_norm on {at8['same_acc']}/{at8['n_docs']} and "
         f"{at8['same_acc_norm']}/{at8['n_docs']} questions). The machine was shared (load average "
         f"{r['machine'].get('loadavg_at_start')} at the start)."), ""])


def update_results_md(out_dir: Path) -> None:
    """Replace (or add) the lm-eval section at the end of RESULTS.md, when there is one."""
    path = out_dir / "RESULTS.md"
    if path.exists():
        text = path.read_text()
        head = text.split("\n" + SECTION, 1)[0].rstrip("\n") + "\n"
        path.write_text(head + results_section(out_dir))


def markdown(r: dict) -> str:
    m = r["machine"]
    worst = max(c["max_abs_diff"] for c in r["comparisons"])
    lines = [
        "# Benchmark: lm-eval tasks as helpfulness", "",
        (f"Generated by `python -m benchmarks.bench_lm_eval` on {r['date']}, in {r['minutes']:.1f} minutes. "
        "Raw numbers: [`results-lm-eval.json`](results-lm-eval.json)."), "",
        "## Setup", "",
        f"- Command: `{r['command']}`",
        (f"- Machine: {m.get('cpu')}, {m.get('cores')} cores; torch {m.get('torch')}, transformers "
        f"{m.get('transformers')}, lm-eval {r['lm_eval_version']}; {r['threads']} torch thread(s) for both. "
        f"Load average {m.get('loadavg_at_start')} at the start and {r['load_end']} at the end: the machine was "
        "shared with other processes, so lm-eval runs and sweeps were interleaved and only ratios are meaningful."),
        (f"- Task: the first {r['questions']} basic-qa questions as a local lm-eval task (`dataset_path: json`, "
        "`Question: …\\nAnswer:`, 4 options, target delimiter ' ', zero-shot)."),
        (f"- Vector: pca of the harmfulness pairs on blocks {r['layers'][0]}–{r['layers'][-1]} of the embedded "
        "SmolLM2-135M-Instruct (float32), steering every position."),
        (f"- Ours: `--helpfulness lm-eval:{TASK} --lm-eval-include DIR`, building the task with lm-eval's "
        f"registry and sweeping {r['norms']} norms ({r['grid']}) in one batched pass (sweep defaults)."),
        (f"- lm-eval: `python -m lm_eval run --model steered --model_args pretrained=<embedded model's "
        f"safetensors folder>,steer_path=<export-lm-eval .pt> --include_path DIR --batch_size {r['batch_size']} "
        "--device cpu --log_samples`, one process per norm; "
        f"{len(r['lm_eval_runs'])} timed, the {r['norms']} of the grid estimated as {r['norms']} × their median."),
        "", "## Results", "",
        "| what | seconds |", "|---|---:|",
    ]
    for run in r["lm_eval_runs"]:
        lines.append(f"| lm-eval run at r = {run['norm']:g} | {run['seconds']:.1f} |")
    for s in r["sweeps"]:
        lines.append(f"| ours: task built by lm-eval's registry + sweep of {r['norms']} norms | "
                     f"{s['build_seconds']:.1f} + {s['sweep_seconds']:.1f} |")
    lines += [
        f"| **{r['norms']} lm-eval runs (estimated)** | **{r['lm_eval_estimated_seconds']:.0f}** |",
        f"| **ours** | **{r['ours_seconds']:.0f}** |", "",
        f"Ratio ours / {r['norms']} lm-eval runs: **{r['ratio']:.3f}** (1/{1 / r['ratio']:.0f}).", "",
        ("A lower bound for lm-eval, without a process per norm: its steered model built once "
         f"({r['lm_eval_in_process_setup_seconds']:.1f} s) and only `simple_evaluate` timed "
         f"({', '.join(f'{x:.1f}' for x in r['lm_eval_in_process_eval_seconds'])} s per norm). Against "
         f"{r['norms']} of those evaluations the ratio is {r['ratio_eval_only']:.3f} "
         f"(1/{1 / r['ratio_eval_only']:.0f}); lm-eval's command line has no way to change the norm "
         "within one run, so a sweep with it pays the whole run per norm."), "",
        ("**Outputs agree** (per-option log-likelihoods of lm-eval's `steered` model against the sweep's at the "
        "same norm):"), "",
        ("| r | docs | max abs diff | median abs diff | same argmax | same acc | same acc_norm | acc (ours, lm-eval) "
        "| acc_norm (ours, lm-eval) |"), "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in r["comparisons"]:
        lines.append(f"| {c['norm']:g} | {c['n_docs']} | {c['max_abs_diff']:.1e} | {c['median_abs_diff']:.1e} | "
                     f"{c['same_argmax']} | {c['same_acc']} | {c['same_acc_norm']} | {c['acc_ours']:.3f}, "
                     f"{c['acc_lm_eval']:.3f} | {c['acc_norm_ours']:.3f}, {c['acc_norm_lm_eval']:.3f} |")
    at8 = next((c for c in r["comparisons"] if c["norm"] == 8.0), None)
    lines += [
        "", "## Targets", "", "| target | measured | met |", "|---|---:|---|",
        f"| per-option log-likelihoods match lm-eval's `steered` at r = 8 to ≤ 1e-3 | "
        f"{at8['max_abs_diff']:.1e} | {'yes' if at8['max_abs_diff'] <= 1e-3 else 'no'} |" if at8 else
        "| per-option log-likelihoods at r = 8 | not run | – |",
        (f"| {r['norms']}-norm sweep ≤ 1/10 of {r['norms']} lm-eval runs | {r['ratio']:.3f} | "
        f"{'yes' if r['ratio'] <= 0.1 else 'no'} |"), "",
        f"Largest per-option difference over every compared norm: {worst:.1e}.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
