"""The sweep's achieved matmul FLOP/s against the machine's fp32 matmul peak, measured in the
same run, and where the rest of its time goes."""

from __future__ import annotations

import statistics
import time

from benchmarks import flops
from benchmarks.harness import timed
from benchmarks.inputs import Bench, subset
from benchmarks.methods import run_ours

# torch.profiler operator names, by what they do (first match wins)
OP_GROUPS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("attention kernel", ("scaled_dot_product",)),
    ("log-softmax, logsumexp", ("logsumexp", "log_softmax", "aten::norm", "linalg_vector_norm")),
    ("copies, indexing, cache selection", ("copy", "index", "cat", "gather", "clone", "contiguous",
                                           "aten::to", "select", "slice", "stack", "repeat", "expand",
                                           "aten::full", "aten::zeros", "aten::empty", "fill_", "masked",
                                           "aten::view", "reshape", "cumsum", "clamp", "where")),
    ("elementwise, norms, activations", ("aten::mul", "aten::add", "aten::sub", "aten::div", "silu",
                                         "aten::pow", "rsqrt", "aten::mean", "aten::neg", "aten::cos",
                                         "aten::sin", "aten::tanh", "aten::exp", "aten::sum")),
)


def op_group(name: str) -> str:
    for group, keys in OP_GROUPS:
        if any(k in name for k in keys):
            return group
    return "other operators"


def tokenisation_seconds(b: Bench, reps: int = 3) -> float:
    """What ``run_sweep`` spends turning the task into token sequences (once per task)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        b.task.sequences(b.tokenizer)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_groups(b: Bench) -> dict:
    """One profiled run of the sweep: self time by operator group, and the wall time outside
    every operator (Python, the dispatcher, the profiler's own overhead)."""
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_ours(b)
    wall = time.perf_counter() - t0
    groups: dict[str, float] = {}
    for e in prof.key_averages():
        groups[op_group(e.key)] = groups.get(op_group(e.key), 0.0) + e.self_cpu_time_total / 1e6
    groups["outside operators (Python, dispatch, profiler)"] = max(0.0, wall - sum(groups.values()))
    return {"wall_s": wall, "seconds": groups}


def measure(b: Bench, reps: int = 3, peak_n: int = 2048, peak_reps: int = 5, profile_questions: int = 8,
            log=print) -> dict:
    """Time the sweep ``reps`` times, each between two measurements of the matmul peak, and
    count its FLOPs: unavoidable (analytic) and executed (every linear layer, padding included)."""
    import torch

    norms = b.norms if 0.0 in b.norms else b.norms + [0.0]  # the sweep always evaluates 0
    need = flops.unavoidable_flops(b.model.config, b.seqs.prompts, b.seqs.continuations,
                                   len(norms), min(b.layers))
    loose = flops.unavoidable_flops(b.model.config, b.seqs.prompts,
                                    [list(c) + [0] for c in b.seqs.continuations], len(norms),
                                    min(b.layers))
    with flops.LinearCounter(b.model) as counter:
        run_ours(b)
    executed = dict(counter.flops)
    rows_per_call = statistics.median(counter.rows)
    tokenise = tokenisation_seconds(b)
    peaks, sweeps = [matmul_rate_logged(peak_n, peak_reps, log)], []
    for rep in range(reps):
        m, _ = timed(lambda: run_ours(b))
        sweeps.append(m)
        log(f"  sweep rep {rep}: {m['seconds']:.2f} s (load {m['load_before'][0]})")
        peaks.append(matmul_rate_logged(peak_n, peak_reps, log))
    shaped = flops.block_linear_rate(b.model.config, int(rows_per_call), peak_reps)
    log(f"  block linears at {int(rows_per_call)} rows: {shaped['best'] / 1e9:.0f} GFLOP/s")
    prof = profile_groups(subset(b, min(profile_questions, len(b.task.questions))))
    prof["questions"] = min(profile_questions, len(b.task.questions))
    score_s = [m["seconds"] for m in sweeps]
    return {
        "threads": torch.get_num_threads(),
        "questions": len(b.task.questions),
        "sequences": len(b.seqs.prompts),
        "norms": len(norms),
        "layers": [b.layers[0], b.layers[-1]],
        "unavoidable": need,
        "unavoidable_every_option_token": loose["total"],
        "executed": executed,
        "linear_rows_per_call_median": rows_per_call,
        "tokenise_s": tokenise,
        "score_s": score_s,
        "peaks": peaks,
        # paired: each repetition against the mean of the peaks measured just before and after it
        "paired_fraction": [need["total"] / (s + tokenise) / ((peaks[i]["best"] + peaks[i + 1]["best"]) / 2)
                            for i, s in enumerate(score_s)],
        "block_linear_rate": shaped,
        "profile": prof,
        "load": [m["load_before"][0] for m in sweeps],
    }


def matmul_rate_logged(n, reps, log) -> dict:
    rate = flops.matmul_rate(n, reps)
    log(f"  fp32 matmul {n}×{n}: best {rate['best'] / 1e9:.0f} GFLOP/s")
    return rate


def summary(e: dict) -> dict:
    """The headline numbers and the wall time split into its parts, in seconds."""
    total_s = statistics.median(e["score_s"]) + e["tokenise_s"]
    peak = max(p["best"] for p in e["peaks"])
    need = e["unavoidable"]["total"]
    ran = e["executed"]["blocks"] + e["executed"]["logits"]
    need_linear = need - e["unavoidable"]["attention_part"]
    shaped = e["block_linear_rate"]["best"]
    at_peak, padding = need / peak, max(0.0, ran - need_linear) / peak
    small = max(0.0, ran / shaped - ran / peak)
    prof = e["profile"]["seconds"]
    rest = max(0.0, total_s - e["tokenise_s"] - at_peak - padding - small)
    non_matmul = {k: v for k, v in prof.items() if k != "matmul"}
    scale = sum(non_matmul.values())
    return {
        "seconds": total_s,
        "achieved": need / total_s,
        "peak": peak,
        "fraction": need / total_s / peak,
        "padding_fraction_blocks": 1 - block_linear_needed(e) / e["executed"]["blocks"],
        "logit_rows_executed_over_needed": e["executed"]["logits"] / e["unavoidable"]["logits"],
        "parts": {
            "unavoidable matmuls at the peak rate": at_peak,
            "padding and other executed-but-unneeded matmuls, at the peak rate": padding,
            "matmuls below the peak at the model's shapes": small,
            "tokenisation": e["tokenise_s"],
            "everything else (estimated below)": rest,
        },
        # the rest, split in the proportions of the profiled run's non-matmul time
        "rest_split": {k: rest * v / scale for k, v in non_matmul.items()} if scale else {},
    }


def block_linear_needed(e: dict) -> int:
    """The unavoidable FLOPs of the blocks' linear layers (attention's own matmuls excluded)."""
    u = e["unavoidable"]
    return u["lower_blocks"] + u["upper_blocks"] - u["attention_part"]
