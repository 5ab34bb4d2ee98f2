#!/usr/bin/env python
"""The sweep benchmark on a GPU, for a 1B–8B model in bfloat16, and the paper's protocol end to end.

    python benchmarks/bench_gpu.py --model PATH_OR_ID                      # a real model
    python benchmarks/bench_gpu.py --random llama-1b --tokenizer DIR      # random weights

With ``--random`` the model is a randomly initialised Llama of that size (saved to a temporary
folder, so it loads through ``load_model`` like any other): its numbers measure speed and memory
only. Three parts, each written to ``--out-dir`` (``RESULTS.md``, ``results.json``) as it ends:

* ``compare``: the methods of ``bench_sweep.py`` (ours, ours_no_sharing, loop, peer,
  limit_same_batches, limit_per_norm) on the same cloze sequences and norms, timed with the GPU
  synchronised, medians of interleaved repetitions, peak GPU memory per method;
* ``paper``: ``repe-tradeoff run`` on the paper's protocol (81 norms, 8 middle layers, a behavior
  and a letter-form task, ``device: auto``), timed by stage, with its throughput and peak memory;
* ``sizes``: the sweep alone on further random model sizes (e.g. ``llama-8b``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_sweep as bs  # noqa: E402  (the methods are shared with the CPU benchmark)

GiB = 1024**3
# Llama-3.2-1B and Llama-3.1-8B shapes; the vocabulary is the tokenizer's.
SIZES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False),
    "llama-tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=10,  # smoke test on CPU
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model folder or cached hub id")
    src.add_argument("--random", choices=sorted(SIZES), help="a randomly initialised Llama of this size")
    p.add_argument("--tokenizer", help="tokenizer folder for --random models")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--norms", type=int, default=9)
    p.add_argument("--span", type=float, default=0.5, help="grid spans ±SPAN × the mean residual norm")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--loop-norms", type=int, default=2, help="norms the per-norm loop runs (scaled to the grid)")
    p.add_argument("--peer-batch", type=int, default=64)
    p.add_argument("--ours-batch", type=int, default=None, help="rows per forward for ours (default: the sweep's)")
    p.add_argument("--profile", action="store_true", help="also write torch.profiler tables of ours and ours_no_sharing")
    p.add_argument("--paper-limit", type=int, default=100, help="items per task in the paper protocol")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per forward in the paper protocol")
    p.add_argument("--sizes", default="", help="further random sizes for the sweep alone, e.g. llama-8b")
    p.add_argument("--parts", default="compare,paper,sizes")
    p.add_argument("--out-dir", type=Path, default=HERE / "gpu" / "latest")
    return p.parse_args(argv)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def random_model(size: str, tokenizer_dir: str, dtype: str):
    """A randomly initialised Llama of ``size`` with the given tokenizer, on the device."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from repe_tradeoff.models import LoadedModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=4096, rope_theta=500000.0,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **SIZES[size])
    torch.manual_seed(0)
    with torch.device(device()):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()
    return LoadedModel(model, tok, f"random {size}", None)


def saved(lm, name: str) -> str:
    """Save a model and its tokenizer to a temporary folder, so it loads like any other."""
    folder = Path(tempfile.gettempdir()) / f"repe-bench-{name}"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return str(folder)


def _cuda(name: str, *args):
    import torch

    return getattr(torch.cuda, name)(*args) if torch.cuda.is_available() else 0


def gpu_timed(fn):
    """Seconds (GPU synchronised) and peak GPU memory, in GiB (zeros on a CPU)."""
    _cuda("synchronize")
    _cuda("reset_peak_memory_stats")
    start = _cuda("memory_allocated")
    t0 = time.perf_counter()
    result = fn()
    _cuda("synchronize")
    seconds = time.perf_counter() - t0
    peak = _cuda("max_memory_allocated")
    return {"seconds": seconds, "peak_gib": peak / GiB, "above_start_gib": (peak - start) / GiB}, result


def bench_for(model, tokenizer, questions: int, n_norms: int, span: float) -> bs.Bench:
    """bench_sweep's inputs, with the harmfulness vector read from this model's middle blocks."""
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models import n_layers, parse_layers
    from repe_tradeoff.reading import extract

    pairs = [(p.aligned, p.misaligned) for p in load_behavior("harmfulness").pairs]
    vector, _ = extract(model, tokenizer, pairs, parse_layers("middle", n_layers(model)), method="pca")
    return bs.bench_from(model, tokenizer, vector, questions, n_norms, span)


def compare(b: bs.Bench, args) -> dict:
    """bench_sweep's methods, GPU-timed; loop at ``loop_norms`` norms, scaled to the grid."""
    bs.warm_up(b)
    size = {"batch_size": args.ours_batch} if args.ours_batch else {}
    with bs.dry_base(b.model) as same:  # the padded batches ours_no_sharing runs
        bs.run_ours(b, share_lower=False, share_prompts=False, **size)
    loop_idx = bs.loop_norms(b, args.loop_norms)
    fns = bs.method_fns(b, args.peer_batch, same, loop_idx, [])
    fns["ours"] = lambda: bs.run_ours(b, **size)
    fns["ours_no_sharing"] = lambda: bs.run_ours(b, share_lower=False, share_prompts=False, **size)
    if args.profile:
        profile(fns, args.out_dir)
    fast, slow = ("ours", "ours_no_sharing", "limit_same_batches"), ("loop", "peer", "limit_per_norm")
    runs: dict[str, list] = {m: [] for m in fast + slow}
    outputs = {}
    for rep in range(args.reps):
        order = fast[rep % 3:] + fast[: rep % 3]
        for m in order + (slow if rep == 0 else ()):
            measured, out = gpu_timed(fns[m])
            runs[m].append(measured)
            if out is not None:
                outputs[m] = out
            print(f"  {m:20s} {measured['seconds']:8.3f} s  peak {measured['peak_gib']:.2f} GiB", flush=True)
    scale_loop = len(b.norms) / len(loop_idx)
    median = {m: statistics.median(r["seconds"] for r in v) * (scale_loop if m == "loop" else 1)
              for m, v in runs.items()}
    ref = outputs["ours"]
    diffs = {m: float((outputs[m] - (ref[:, loop_idx] if m == "loop" else ref)).abs().max())
             for m in ("ours_no_sharing", "loop", "peer")}
    tokens = bs.real_tokens(b)
    return {
        "questions": args.questions, "norms": b.norms, "layers": b.layers, "tokens": tokens,
        "loop_norms": [b.norms[k] for k in loop_idx], "runs": runs, "median_s": median,
        "tokens_per_s": {m: tokens / s for m, s in median.items()},
        "peak_gib": {m: max(r["peak_gib"] for r in v) for m, v in runs.items()},
        "ratios": {
            "ours/loop": median["ours"] / median["loop"],
            "ours/peer": median["ours"] / median["peer"],
            "ours_no_sharing/limit_same_batches": median["ours_no_sharing"] / median["limit_same_batches"],
            "ours/limit_per_norm": median["ours"] / median["limit_per_norm"],
        },
        "overhead_per_rep": [a["seconds"] / c["seconds"]
                             for a, c in zip(runs["ours_no_sharing"], runs["limit_same_batches"])],
        "max_abs_diff_vs_ours": diffs,
        "typical_abs_loglik": float(ref.abs().median()),
    }


def profile(fns, out_dir: Path) -> None:
    """Operator tables of one run of ours and of ours_no_sharing, by device and by host time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device() == "cuda" else [])
    tables = []
    for method in ("ours", "ours_no_sharing"):
        with torch_profile(activities=activities) as prof:
            fns[method]()
        averages = prof.key_averages()
        for key in ("self_cuda_time_total", "self_cpu_time_total") if device() == "cuda" else ("self_cpu_time_total",):
            tables.append(f"## {method}, by {key}\n\n{averages.table(sort_by=key, row_limit=25)}\n")
    (out_dir / "profile.txt").write_text("\n".join(tables))


def paper(model_dir: str, args) -> dict:
    """The paper's protocol through `run` (config validated by RunConfig), timed end to end."""
    from repe_tradeoff.config import RunConfig
    from repe_tradeoff.pipeline import run_study

    out = Path(tempfile.gettempdir()) / "repe-bench-paper"
    cfg = RunConfig.model_validate({
        "model": model_dir, "dtype": args.dtype, "device": "auto", "out": str(out),
        "behaviors": [{"name": "harmfulness"}],
        "helpfulness": [{"spec": "basic-qa", "format": "letter"}],
        "layer_sets": ["middle"], "methods": ["pca"],
        "norms": "-0.5:0.5:0.0125", "norm_unit": "residual",  # 81 norms, as the paper's -10:10:0.25
        "batch_size": args.batch_size, "limit": args.paper_limit,
    })
    measured, (report, _) = gpu_timed(lambda: run_study(cfg))
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    return {**measured, "report": str(report), "norms": len(cfg.grid()), "items": len(items),
            "points_per_s": len(items) / measured["seconds"], "limit": args.paper_limit,
            "batch_size": args.batch_size}


def sweep_only(lm, args) -> dict:
    """The paper protocol's sweep alone (no extraction, fit or report) on another model size."""
    from repe_tradeoff.data import load_behavior, load_helpfulness
    from repe_tradeoff.tasks import AlignmentTask, MultipleChoiceTask
    from repe_tradeoff.models import n_layers, parse_layers
    from repe_tradeoff.reading import extract
    from repe_tradeoff.sweep import SweepPlan, run_config, run_sweep

    model, tok = lm
    weights = _cuda("memory_allocated")
    layers = parse_layers("middle", n_layers(model))
    behavior = load_behavior("harmfulness")
    vector, _ = extract(model, tok, [(p.aligned, p.misaligned) for p in behavior.pairs], layers)
    scale = statistics.mean(vector.metadata["residual_norms"][str(l)] for l in layers)
    qa = load_helpfulness("basic-qa")
    plan = SweepPlan(norms=[round(scale * (-0.5 + 0.0125 * i), 6) for i in range(81)],
                     tasks=[AlignmentTask(behavior.name, list(behavior.items)),
                            MultipleChoiceTask(qa.name, list(qa.questions), "letter")],
                     layers=layers, batch_size=args.batch_size)
    out = Path(tempfile.mkdtemp(prefix="repe-bench-sweep-"))
    config = run_config(plan, vector, model_name=lm.name, model_revision=None, dtype=args.dtype)
    measured, _ = gpu_timed(lambda: run_sweep(model, tok, vector, plan, out, config=config, limit=args.paper_limit))
    items = len((out / "items.jsonl").read_text().splitlines())
    return {**measured, "items": items, "points_per_s": items / measured["seconds"],
            "weights_gib": weights / GiB, "layers": layers}


def write(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# Benchmark on a GPU: {results['gpu']}", "",
             f"Generated by `{results['command']}` on {results['date']}. Model: {results['model']} "
             f"({results['dtype']}){' — random weights: speed and memory only' if results['random'] else ''}.", ""]
    c = results.get("compare")
    if c:
        lines += [f"## The sweep against the alternatives ({c['questions']} cloze questions × "
                  f"{len(c['norms'])} norms, blocks {c['layers'][0]}–{c['layers'][-1]})", "",
                  "| method | median time (s) | tokens/s | peak GPU memory (GiB) |", "|---|---:|---:|---:|"]
        lines += [f"| {m} | {c['median_s'][m]:.3f} | {c['tokens_per_s'][m]:.0f} | {c['peak_gib'][m]:.2f} |"
                  for m in c["median_s"]]
        lines += ["", "| ratio | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in c["ratios"].items()]
        lines += ["", "Steering overhead per repetition (ours_no_sharing / limit_same_batches): "
                  + ", ".join(f"{x:.3f}" for x in c["overhead_per_rep"])
                  + f"; median {statistics.median(c['overhead_per_rep']):.3f}."]
        lines += ["", f"The loop ran norms {c['loop_norms']} and is scaled to the grid. Largest difference of "
                  f"the per-option log-likelihoods from ours: " + ", ".join(
                      f"{m} {v:.3g}" for m, v in c["max_abs_diff_vs_ours"].items())
                  + f" (typical |log-likelihood| {c['typical_abs_loglik']:.3g}; {results['dtype']} rounding).", ""]
    p = results.get("paper")
    if p:
        lines += ["## The paper's protocol, `repe-tradeoff run`", "",
                  f"{p['norms']} norms, first {p['limit']} items of harmfulness (forced-choice) and basic-qa "
                  f"(letter), batch {p['batch_size']} rows, `device: auto`: {p['seconds']:.1f} s end to end "
                  f"(vector, sweep, fits, generations, report), {p['items']} per-item values "
                  f"({p['points_per_s']:.0f}/s), peak GPU memory {p['peak_gib']:.2f} GiB.", ""]
    for size, s in results.get("sizes", {}).items():
        lines += [f"## Sweep alone, random {size}", "",
                  f"{s['items']} per-item values in {s['seconds']:.1f} s ({s['points_per_s']:.0f}/s); "
                  f"weights {s['weights_gib']:.1f} GiB, peak GPU memory {s['peak_gib']:.2f} GiB.", ""]
    (out_dir / "RESULTS.md").write_text("\n".join(lines))


def main(argv=None) -> None:
    import torch

    from repe_tradeoff.models import load_model

    args = parse_args(argv)
    parts = set(args.parts.split(","))
    model_dir = saved(random_model(args.random, args.tokenizer, args.dtype), args.random) if args.random else args.model
    results = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (smoke test)", "model": args.random or args.model, "random": bool(args.random),
               "dtype": args.dtype, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "command": "python benchmarks/bench_gpu.py " + " ".join(argv or sys.argv[1:]),
               "torch": torch.__version__}
    if "compare" in parts:
        model, tok = load_model(model_dir, dtype=args.dtype, device=device())
        results["compare"] = compare(bench_for(model, tok, args.questions, args.norms, args.span), args)
        write(results, args.out_dir)
        del model
        _cuda("empty_cache")
    if "paper" in parts:
        results["paper"] = paper(model_dir, args)
        write(results, args.out_dir)
        _cuda("empty_cache")
    for size in filter(None, args.sizes.split(",")) if "sizes" in parts else ():
        lm = random_model(size, args.tokenizer, args.dtype)
        results.setdefault("sizes", {})[size] = sweep_only(lm, args)
        write(results, args.out_dir)
        del lm
        _cuda("empty_cache")
    print((args.out_dir / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
