"""Benchmark of the norm sweep: the batched sweep against a per-norm loop, the steering-vectors
library and plain unsteered forwards, on the embedded model; and the sweep's achieved FLOP/s
against the machine's matmul peak.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_sweep                    # about 20 minutes
    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_sweep --quick            # smoke version
    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_sweep --efficiency-only  # the FLOP/s section

Every method scores the same cloze sequences (question + option) of ``basic-qa`` at the same
norms and returns the per-option log-likelihoods, which are checked to agree. Writes
``RESULTS.md``, ``results.json`` and ``time_vs_norms.png`` to ``--out-dir`` (default: benchmarks/).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--questions", type=int, default=40, help="basic-qa questions (4 options each)")
    a("--norms", type=int, default=9, help="norms in the symmetric grid (odd: includes 0)")
    a("--layers", default="middle", help="steered blocks of the comparison (a layer spec)")
    a("--reps", type=int, default=3,
      help="repetitions of ours, ours_no_sharing and limit_same_batches (interleaved, rotating order)")
    a("--ref-reps", type=int, default=1, help="repetitions of the slower references (loop, peer, limit_per_norm)")
    a("--loop-norms", type=int, default=2,
      help="norms the per-norm loop runs (the extremes first; its time is scaled to the whole grid, "
           "each norm being an identical, separately timed pass); 0 = every norm")
    a("--span", type=float, default=0.5, help="grid spans ±SPAN × the mean residual norm")
    a("--threads", type=int, default=1,
      help="torch threads for every method of the comparison (default 1: on a shared 2-core machine two "
           "threads slow down several-fold whenever another process runs; 0 = torch's default)")
    a("--peer-batch", type=int, default=64, help="sequences per forward for peer and limit_per_norm")
    a("--scaling-questions", type=int, default=4, help="questions for the time-vs-norms scaling")
    a("--detail-questions", type=int, default=8,
      help="questions for the depth scaling, the time breakdown and the profile")
    a("--scaling-norms", default="1,4,16,64", help="grid sizes for time vs number of norms")
    a("--scaling-reps", type=int, default=1, help="repetitions of the norms scaling")
    a("--depths", default="0,8,15,22", help="first steered layers for the depth scaling (8 layers each)")
    a("--depth-reps", type=int, default=1, help="repetitions of the depth scaling")
    a("--efficiency-threads", type=int, default=2, help="torch threads of the FLOP/s measurement")
    a("--efficiency-layers", default="8-15", help="steered blocks of the FLOP/s measurement")
    a("--efficiency-reps", type=int, default=3, help="repetitions of the sweep in the FLOP/s measurement")
    a("--no-efficiency", action="store_true", help="skip the FLOP/s measurement")
    a("--isolated-memory", action="store_true",
      help="also measure each method's peak RSS in a fresh process (adds about one pass of every method)")
    a("--no-demo", action="store_true", help="skip the demo's peak-memory measurement")
    a("--full-demo", action="store_true", help="measure the full demo, not `demo --quick`")
    a("--quick", action="store_true", help="smoke version: 8 questions, 5 norms, 1 rep, small scaling runs")
    a("--out-dir", type=Path, default=None,
      help="where RESULTS.md, results.json and the plot go (default: benchmarks/; --quick: a temp folder)")
    a("--demo-only", action="store_true",
      help="only measure the demo's memory (with --full-demo: the full demo), add it to the results.json "
           "in --out-dir and re-render RESULTS.md")
    a("--efficiency-only", action="store_true",
      help="only measure the FLOP/s section, add it to the results.json in --out-dir and re-render RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.questions, args.norms = min(args.questions, 8), min(args.norms, 5)
        args.reps = args.ref_reps = args.depth_reps = args.efficiency_reps = 1
        args.scaling_questions = min(args.scaling_questions, 4)
        args.detail_questions = min(args.detail_questions, 4)
        args.no_demo, args.scaling_norms, args.depths = True, "1,4,16", "0,15"
    if args.out_dir is None:
        args.out_dir = Path(tempfile.gettempdir()) / "repe-bench-quick" if args.quick else HERE
    return args


def command_line() -> str:
    return " ".join(["HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_sweep"]
                    + [shlex.quote(x) for x in sys.argv[1:]])


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def efficiency(b, args) -> dict:
    """The FLOP/s measurement on ``b``'s model, with its own layers and thread count."""
    import torch

    from benchmarks.efficiency import measure
    from benchmarks.inputs import bench_from

    before = torch.get_num_threads()
    torch.set_num_threads(args.efficiency_threads)
    try:
        eb = bench_from(b.model, b.tokenizer, b.vector_all, args.questions, args.norms, args.span,
                        args.efficiency_layers)
        out = measure(eb, args.efficiency_reps, log=lambda s: print(s, flush=True))
    finally:
        torch.set_num_threads(before)
    return {**out, "command": command_line(), "date": now(), "cores": os.cpu_count()}


def update_results(args, key: str, value: dict) -> None:
    """Add one measurement to an existing results.json and re-render RESULTS.md."""
    from benchmarks.writer import render

    path = args.out_dir / "results.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run the whole benchmark once first (without --{key.split('_')[0]}-only)")
    results = json.loads(path.read_text())
    results[key] = value
    render(results, args.out_dir)
    print(f"→ {args.out_dir / 'RESULTS.md'}")


def main(argv=None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    from benchmarks import experiments as ex
    from benchmarks.harness import load_average, machine_info
    from benchmarks.inputs import real_tokens, setup
    from benchmarks.memory import demo_chunk_memory, demo_memory, isolated_memory
    from benchmarks.methods import warm_up
    from benchmarks.writer import render

    if args.demo_only:
        update_results(args, "demo_memory_full" if args.full_demo else "demo_memory", demo_memory(args.full_demo))
        return
    import torch

    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    t_start, load_start = time.perf_counter(), load_average()
    print("loading the model, the vector and the task", flush=True)
    b = setup(args.questions, args.norms, args.span, args.layers)
    if args.efficiency_only:
        update_results(args, "efficiency", efficiency(b, args))
        return
    warm_up(b)
    results: dict = {"date": now(), "command": command_line(), "config": {
        "questions": args.questions, "sequences": len(b.seqs.prompts), "tokens_per_norm": real_tokens(b, 1),
        "norms": b.norms, "span": args.span, "scale": b.scale, "layers": b.layers, "layer_spec": args.layers,
        "n_layers": b.n_layers, "reps": args.reps, "ref_reps": args.ref_reps, "loop_norms": args.loop_norms,
        "peer_batch": args.peer_batch, "threads": torch.get_num_threads(), "default_threads": default_threads,
        "scaling_questions": args.scaling_questions, "detail_questions": args.detail_questions,
        "scaling_reps": args.scaling_reps, "depth_reps": args.depth_reps, "quick": args.quick}}
    print(f"main table: {len(b.seqs.prompts)} sequences × {len(b.norms)} norms", flush=True)
    results["main"] = ex.main_table(b, args.reps, args.ref_reps, args.loop_norms, args.peer_batch)
    print("time vs number of norms", flush=True)
    results["norms_scaling"] = ex.norms_scaling(b, args.scaling_questions,
                                                [int(x) for x in args.scaling_norms.split(",")],
                                                args.scaling_reps, args.span, args.peer_batch)
    print("time vs depth of the first steered layer", flush=True)
    results["depth_scaling"] = ex.depth_scaling(b, args.detail_questions, [int(x) for x in args.depths.split(",")],
                                                args.depth_reps)
    print("time breakdown, profile, demo-chunk memory", flush=True)
    results["breakdown"] = ex.breakdown(b, args.detail_questions)
    results["profile"] = ex.profile_ours(b, args.detail_questions)
    results["demo_chunk"] = demo_chunk_memory(b)
    if not args.no_efficiency:
        print(f"achieved FLOP/s against the matmul peak ({args.efficiency_threads} threads)", flush=True)
        results["efficiency"] = efficiency(b, args)
    if args.isolated_memory:
        print("peak memory per method in fresh processes", flush=True)
        results["isolated_memory"] = isolated_memory({
            "questions": args.questions, "norms": args.norms, "span": args.span, "layers": args.layers,
            "threads": torch.get_num_threads(), "peer_batch": args.peer_batch, "loop_norms": args.loop_norms})
    if not args.no_demo:
        print(f"demo peak memory ({'full' if args.full_demo else 'quick'})", flush=True)
        del b
        results["demo_memory"] = demo_memory(args.full_demo)
    results["machine"] = machine_info(load_start)
    results["total_seconds"] = time.perf_counter() - t_start
    render(results, args.out_dir)
    print(f"done in {results['total_seconds']:.0f} s → {args.out_dir / 'RESULTS.md'}", flush=True)
    for v in results["verdicts"]:
        print(f"  {'met   ' if v['met'] else 'MISSED'} {v['target']}: {v['value']:.3g} {v['unit']}")


if __name__ == "__main__":
    main()
