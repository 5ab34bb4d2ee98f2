"""The sweep benchmark on a GPU, for a 1B–8B model in bfloat16, and the paper's protocol end to end.

    python -m benchmarks.bench_gpu --model PATH_OR_ID                      # a real model
    python -m benchmarks.bench_gpu --random llama-1b --tokenizer DIR      # random weights

With ``--random`` the model is a randomly initialised Llama of that size (saved to a temporary
folder, so it loads through ``load_model`` like any other): its numbers measure speed and memory
only. Three parts, each written to ``--out-dir`` (``RESULTS.md``, ``results.json``) as it ends:

* ``compare``: the methods of :mod:`benchmarks.methods` (ours, ours_no_sharing, loop, peer,
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
from pathlib import Path

from benchmarks.harness import GiB, check_outputs, cuda_call, gpu_timed, interleaved, paired_ratios
from benchmarks.inputs import Bench, bench_from, real_tokens
from benchmarks.methods import capture_same_batches, loop_norms, method_fns, warm_up
from benchmarks.writer_gpu import write_gpu

HERE = Path(__file__).resolve().parent
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

    from repe_tradeoff.models.loading import LoadedModel

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


def bench_for(model, tokenizer, questions: int, n_norms: int, span: float) -> Bench:
    """The benchmark's inputs, with the harmfulness vector read from this model's middle blocks."""
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.vectors.reading import extract

    pairs = [(p.aligned, p.misaligned) for p in load_behavior("harmfulness").pairs]
    vector, _ = extract(model, tokenizer, pairs, parse_layers("middle", n_layers(model)), method="pca")
    return bench_from(model, tokenizer, vector, questions, n_norms, span)


def compare(b: Bench, args) -> dict:
    """The methods, GPU-timed; the loop at ``loop_norms`` norms, scaled to the grid."""
    warm_up(b)
    same = capture_same_batches(b, args.ours_batch)  # the padded batches ours_no_sharing runs
    loop_idx = loop_norms(b, args.loop_norms)
    fns = method_fns(b, args.peer_batch, same, loop_idx, [], ours_batch=args.ours_batch)
    if args.profile:
        profile(fns, args.out_dir)
    fast, slow = ("ours", "ours_no_sharing", "limit_same_batches"), ("loop", "peer", "limit_per_norm")
    counts = {**{m: args.reps for m in fast}, **{m: 1 for m in slow}}

    def on_run(rep, m, measured):
        print(f"  {m:20s} {measured['seconds']:8.3f} s  peak {measured['peak_gib']:.2f} GiB", flush=True)

    runs, outputs = interleaved({m: fns[m] for m in fast + slow}, counts, gpu_timed, on_run)
    scale_loop = len(b.norms) / len(loop_idx)
    median = {m: statistics.median(r["seconds"] for r in v) * (scale_loop if m == "loop" else 1)
              for m, v in runs.items()}
    # bfloat16 rounding: the differences are reported, not asserted
    check = check_outputs(outputs, "ours#0", float("inf"), {k: loop_idx for k in outputs if k.startswith("loop#")})
    diffs = {m: max(v for k, v in check["max_abs_diff"].items() if k.split("#")[0] == m)
             for m in ("ours_no_sharing", "loop", "peer")}
    tokens = real_tokens(b)
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
        "overhead_per_rep": paired_ratios(runs, "ours_no_sharing", "limit_same_batches"),
        "max_abs_diff_vs_ours": diffs,
        "typical_abs_loglik": float(outputs["ours#0"].abs().median()),
    }


def profile(fns, out_dir: Path) -> None:
    """Operator tables of one run of ours and of ours_no_sharing, by device and by host time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

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
    """The paper's protocol through `run` (config validated by StudyConfig), timed end to end."""
    from repe_tradeoff.workflows.settings import StudyConfig
    from repe_tradeoff.workflows.study import run_study

    out = Path(tempfile.gettempdir()) / "repe-bench-paper"
    cfg = StudyConfig.model_validate({
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
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.tasks.choice import AlignmentTask, MultipleChoiceTask
    from repe_tradeoff.vectors.reading import extract
    from repe_tradeoff.workflows.sweep import SweepPlan, run_config, run_sweep

    model, tok = lm
    weights = cuda_call("memory_allocated")
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


def main(argv=None) -> None:
    import torch

    from repe_tradeoff.models.loading import load_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    parts = set(args.parts.split(","))
    model_dir = saved(random_model(args.random, args.tokenizer, args.dtype), args.random) if args.random else args.model
    results = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (smoke test)", "model": args.random or args.model, "random": bool(args.random),
               "dtype": args.dtype, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "command": "python -m benchmarks.bench_gpu " + " ".join(argv or sys.argv[1:]),
               "torch": torch.__version__}
    if "compare" in parts:
        model, tok = load_model(model_dir, dtype=args.dtype, device=device())
        results["compare"] = compare(bench_for(model, tok, args.questions, args.norms, args.span), args)
        write_gpu(results, args.out_dir)
        del model
        cuda_call("empty_cache")
    if "paper" in parts:
        results["paper"] = paper(model_dir, args)
        write_gpu(results, args.out_dir)
        cuda_call("empty_cache")
    for size in filter(None, args.sizes.split(",")) if "sizes" in parts else ():
        lm = random_model(size, args.tokenizer, args.dtype)
        results.setdefault("sizes", {})[size] = sweep_only(lm, args)
        write_gpu(results, args.out_dir)
        del lm
        cuda_call("empty_cache")
    print((args.out_dir / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
