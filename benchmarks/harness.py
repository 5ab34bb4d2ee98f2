"""Measuring: wall time, resident memory, interleaved repetitions, output-equality checks and
timing hooks on the decoder blocks."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

GiB = 1024**3


class OutputsDisagree(AssertionError):
    """Two methods returned different per-option log-likelihoods."""


# ------------------------------------------------------------------------------- memory


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    text = Path("/proc/self/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))
    return rss, hwm


def reset_peak() -> int:
    """Return freed heap to the OS and reset the RSS high-water mark; returns the RSS after."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux ≥ 4.0: VmHWM := VmRSS
    return rss_kib()[0]


# ------------------------------------------------------------------------------- timing


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn):
    """One call: seconds, peak RSS and RSS at the start (KiB), load average before/after; and its result."""
    load_before = load_average()
    before = reset_peak()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_kib": rss_kib()[1], "before_kib": before,
            "load_before": load_before, "load_after": load_average()}, result


def interleaved(fns: dict, reps: dict[str, int], timer=timed, on_run=None):
    """Run each method ``reps[name]`` times, all methods once per repetition in an order that
    rotates by one each repetition, so a slow spell of a shared machine hits every method.

    Returns ({name: [measurement, ...]}, {"name#rep": result}) (None results are dropped).
    """
    names = list(fns)
    runs = {n: [] for n in names}
    outputs = {}
    for rep in range(max(reps.values(), default=0)):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            if rep >= reps[name]:
                continue
            measured, result = timer(fns[name])
            runs[name].append(measured)
            if result is not None:
                outputs[f"{name}#{rep}"] = result
            if on_run:
                on_run(rep, name, measured)
    return runs, outputs


def cuda_call(name: str, *args):
    import torch

    return getattr(torch.cuda, name)(*args) if torch.cuda.is_available() else 0


def gpu_timed(fn):
    """One call with the GPU synchronised: seconds and peak GPU memory in GiB (zeros without a
    GPU); and its result."""
    cuda_call("synchronize")
    cuda_call("reset_peak_memory_stats")
    start = cuda_call("memory_allocated")
    t0 = time.perf_counter()
    result = fn()
    cuda_call("synchronize")
    seconds = time.perf_counter() - t0
    peak = cuda_call("max_memory_allocated")
    return {"seconds": seconds, "peak_gib": peak / GiB, "above_start_gib": (peak - start) / GiB}, result


def paired_ratios(runs: dict, a: str, b: str) -> list[float]:
    """a / b per repetition: both ran in the same repetition, so they share its machine load."""
    return [x["seconds"] / y["seconds"] for x, y in zip(runs[a], runs[b])]


def median_seconds(measurements: list[dict]) -> float:
    return statistics.median(m["seconds"] for m in measurements)


# ------------------------------------------------------------------------------- equality


def check_outputs(outputs: dict, reference: str, tolerance: float, columns: dict | None = None) -> dict:
    """Largest absolute difference of every output from ``outputs[reference]``.

    ``columns[key]`` lists the reference's columns an output covers (a method that ran only some
    norms). Raises :class:`OutputsDisagree` naming the outputs that differ by ``tolerance`` or
    more, or whose shapes do not match.
    """
    ref = outputs[reference]
    diffs, bad = {}, []
    for key, value in outputs.items():
        cols = (columns or {}).get(key)
        expected = ref if cols is None else ref[:, cols]
        if tuple(value.shape) != tuple(expected.shape):
            bad.append(f"{key} has shape {tuple(value.shape)}, {reference} {tuple(expected.shape)}")
            continue
        diffs[key] = float((value.double() - expected.double()).abs().max())
        if not diffs[key] < tolerance:  # also catches NaN
            bad.append(f"{key} differs by {diffs[key]:.3g}")
    if bad:
        raise OutputsDisagree(f"outputs differ from {reference} (tolerance {tolerance:g}): " + "; ".join(bad))
    others = [v for k, v in diffs.items() if k != reference]
    return {"reference": reference, "max_abs_diff": diffs, "max": max(others, default=0.0),
            "tolerance": tolerance, "n_values": int(ref.numel())}


# ------------------------------------------------------------------------------- hooks


@contextlib.contextmanager
def meter(model):
    """Wall time inside the decoder blocks and the output embedding, and the token-rows the
    blocks processed (batch × sequence length, summed over blocks)."""
    from repe_tradeoff.models.loading import find_layers

    stats = {"block_s": 0.0, "token_layers": 0, "lm_head_s": 0.0, "lm_head_rows": 0}
    starts = {}

    def pre(module, args, kwargs):
        starts[id(module)] = time.perf_counter()

    def post_block(module, args, kwargs, output):
        stats["block_s"] += time.perf_counter() - starts.pop(id(module))
        h = output[0] if isinstance(output, tuple) else output
        stats["token_layers"] += int(h.shape[0]) * int(h.shape[1])

    def post_head(module, args, kwargs, output):
        stats["lm_head_s"] += time.perf_counter() - starts.pop(id(module))
        stats["lm_head_rows"] += int(output.numel() // output.shape[-1])

    handles = []
    for block in find_layers(model):
        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True, prepend=True))
        handles.append(block.register_forward_hook(post_block, with_kwargs=True))
    head = model.get_output_embeddings()
    handles.append(head.register_forward_pre_hook(pre, with_kwargs=True, prepend=True))
    handles.append(head.register_forward_hook(post_head, with_kwargs=True))
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------- machine


def machine_info(load_start) -> dict:
    import torch
    import transformers

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(Exception):
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"Model name:\s*(.+)", text)
        if m:
            cpu = m.group(1).strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": load_start,
        "loadavg_at_end": load_average(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1),
    }
