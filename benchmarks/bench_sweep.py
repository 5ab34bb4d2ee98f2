#!/usr/bin/env python
"""Benchmark of the norm sweep: the batched sweep against a per-norm loop, the steering-vectors
library and plain unsteered forwards, on the embedded model.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sweep.py            # about 10 minutes
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sweep.py --quick    # smoke version

Every method scores the same cloze sequences (question + option) of ``basic-qa`` at the same
norms and returns the per-option log-likelihoods, which are checked to agree. Writes
``benchmarks/RESULTS.md``, ``benchmarks/results.json`` and ``benchmarks/time_vs_norms.png``.

Methods:

* ``ours``: the sweep's scoring path as ``run_sweep`` drives it (``_score_chunk`` per chunk of
  items with the ``SweepPlan`` defaults, then ``records``), sharing on.
* ``ours_flat_shared_lower`` (in the time breakdown only): prompt sharing off, lower-layer sharing on.
* ``ours_no_sharing``: both kinds of sharing off (every row runs the whole model).
* ``loop``: the per-norm protocol: hooks registered anew per norm, one full ``model(ids)`` per
  (question, option) sequence, log-softmax, sum of the option tokens' log-probabilities.
* ``peer``: the same with the ``steering_vectors`` library, batched per norm.
* ``limit_same_batches``: plain ``model.base_model`` forwards of exactly the padded batches
  ``ours_no_sharing`` runs (captured from it): the cost of those forwards without steering.
* ``limit_per_norm``: plain full-model batched forwards of every sequence, once per norm.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GiB = 1024**3
MAIN_METHODS = (
    "ours",
    "ours_no_sharing",
    "loop",
    "peer",
    "limit_same_batches",
    "limit_per_norm",
)
TARGETS = {
    "speedup_vs_loop": 5.0,  # ours at least 5x faster than the loop
    "ratio_vs_peer": 0.5,  # ours at most half the peer's time
    "steering_overhead": 1.10,  # ours_no_sharing / limit_same_batches
    "ratio_vs_limit_per_norm": 1.0,  # ours below the per-norm plain forwards
    "demo_peak_gib": 3.0,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--questions", type=int, default=40, help="basic-qa questions (4 options each)")
    p.add_argument(
        "--norms", type=int, default=9, help="norms in the symmetric grid (odd: includes 0)"
    )
    p.add_argument(
        "--reps",
        type=int,
        default=3,
        help="repetitions of ours, ours_no_sharing and limit_same_batches (interleaved, rotating order)",
    )
    p.add_argument(
        "--ref-reps",
        type=int,
        default=1,
        help="repetitions of the slower references (loop, peer, limit_per_norm)",
    )
    p.add_argument(
        "--loop-norms",
        type=int,
        default=2,
        help="norms the per-norm loop runs (the extremes first; its time is scaled to the whole grid, "
        "each norm being an identical, separately timed pass); 0 = every norm",
    )
    p.add_argument(
        "--span", type=float, default=0.5, help="grid spans ±SPAN × the mean residual norm"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every method (default 1: on a shared 2-core machine two threads slow "
        "down several-fold whenever another process runs; 0 = torch's default)",
    )
    p.add_argument(
        "--peer-batch",
        type=int,
        default=64,
        help="sequences per forward for peer and limit_per_norm",
    )
    p.add_argument(
        "--scaling-questions",
        type=int,
        default=4,
        help="questions for the time-vs-norms scaling",
    )
    p.add_argument(
        "--detail-questions",
        type=int,
        default=8,
        help="questions for the depth scaling, the time breakdown and the profile",
    )
    p.add_argument(
        "--scaling-norms", default="1,4,16,64", help="grid sizes for time vs number of norms"
    )
    p.add_argument("--scaling-reps", type=int, default=1, help="repetitions of the norms scaling")
    p.add_argument(
        "--depths",
        default="0,8,15,22",
        help="first steered layers for the depth scaling (8 layers each)",
    )
    p.add_argument("--depth-reps", type=int, default=1, help="repetitions of the depth scaling")
    p.add_argument(
        "--isolated-memory",
        action="store_true",
        help="also measure each method's peak RSS in a fresh process (adds about one pass of every method)",
    )
    p.add_argument("--no-demo", action="store_true", help="skip the demo's peak-memory measurement")
    p.add_argument(
        "--full-demo", action="store_true", help="measure the full demo, not `demo --quick`"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke version: 8 questions, 5 norms, 1 rep, small scaling runs",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where RESULTS.md, results.json and the plot go (default: benchmarks/; --quick: a temp folder)",
    )
    p.add_argument(
        "--demo-only",
        action="store_true",
        help="only measure the demo's memory (with --full-demo: the full demo) and add it to the "
        "results.json in --out-dir, re-rendering RESULTS.md",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-spec", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.questions = min(args.questions, 8)
        args.norms = min(args.norms, 5)
        args.reps = 1
        args.ref_reps = 1
        args.scaling_questions = min(args.scaling_questions, 4)
        args.detail_questions = min(args.detail_questions, 4)
        args.no_demo = True
        args.scaling_norms = "1,4,16"
        args.depths = "0,15"
        args.depth_reps = 1
    if args.out_dir is None:
        args.out_dir = Path(tempfile.gettempdir()) / "repe-bench-quick" if args.quick else HERE
    return args


# ------------------------------------------------------------------------------- memory


def _rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    text = Path("/proc/self/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))
    return rss, hwm


def _reset_peak() -> int:
    """Return freed heap to the OS and reset the RSS high-water mark; returns the RSS after."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux ≥ 4.0: VmHWM := VmRSS
    return _rss_kib()[0]


# ------------------------------------------------------------------------------- setup


@dataclasses.dataclass
class Bench:
    model: object
    tokenizer: object
    task: object  # HelpfulnessMetric
    seqs: object  # TaskSequences
    vector: object  # repe_tradeoff SteeringVector over `layers`
    vector_all: object  # directions at every layer
    layers: list[int]
    norms: list[float]
    scale: float
    n_layers: int


def _vector_cache_path(model_dir: str, pairs) -> Path:
    key = hashlib.sha256(json.dumps([model_dir, [list(p) for p in pairs]]).encode()).hexdigest()[
        :16
    ]
    return Path(tempfile.gettempdir()) / f"repe-bench-vector-{key}.safetensors"


def load_vector(model, tokenizer, n_layers: int):
    """The pca vector of the built-in harmfulness pairs at every layer (cached in the temp folder).

    Each layer's direction is fitted independently, so the middle layers of this vector are
    exactly what ``extract`` on the middle layers alone returns.
    """
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models import default_model_dir
    from repe_tradeoff.reading import extract
    from repe_tradeoff.vectors import SteeringVector

    behavior = load_behavior("harmfulness")
    pairs = [(p.aligned, p.misaligned) for p in behavior.pairs]
    path = _vector_cache_path(str(default_model_dir()), pairs)
    if path.exists():
        try:
            return SteeringVector.load(path)
        except Exception:  # noqa: BLE001  (a stale cache file is simply recomputed)
            path.unlink(missing_ok=True)
    vector, _ = extract(model, tokenizer, pairs, list(range(n_layers)), method="pca")
    vector.save(path)
    return vector


def setup(questions: int, n_norms: int, span: float, threads: int | None) -> Bench:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from repe_tradeoff.models import load_model, n_layers

    model, tokenizer = load_model("default")
    vector_all = load_vector(model, tokenizer, n_layers(model))
    return bench_from(model, tokenizer, vector_all, questions, n_norms, span)


def bench_from(model, tokenizer, vector_all, questions: int, n_norms: int, span: float) -> Bench:
    """The benchmark's inputs for any model: ``vector_all`` steered on its middle blocks, the
    grid ±``span`` × their mean residual norm, the first ``questions`` of basic-qa as cloze."""
    from repe_tradeoff.data import load_helpfulness
    from repe_tradeoff.tasks import MultipleChoiceTask
    from repe_tradeoff.models import n_layers, parse_layers
    from repe_tradeoff.vectors import SteeringVector

    n = n_layers(model)
    layers = parse_layers("middle", n)
    meta = dict(vector_all.metadata)
    meta["residual_norms"] = {str(l): vector_all.metadata["residual_norms"][str(l)] for l in layers}
    meta["layers"] = layers
    vector = SteeringVector({l: vector_all[l] for l in layers}, meta)
    residual = [meta["residual_norms"][str(l)] for l in layers]
    scale = sum(residual) / len(residual)
    norms = norm_grid(n_norms, span * scale)
    source = load_helpfulness("basic-qa")
    task = MultipleChoiceTask(source.name, list(source.questions)[:questions], "cloze", "plain")
    seqs = task.sequences(tokenizer)
    return Bench(model, tokenizer, task, seqs, vector, vector_all, layers, norms, scale, n)


def norm_grid(count: int, radius: float) -> list[float]:
    """``count`` evenly spaced norms in [-radius, radius] (0 included when count is odd)."""
    if count == 1:
        return [round(radius, 6)]
    grid = [round(-radius + 2 * radius * i / (count - 1), 6) + 0.0 for i in range(count)]
    if count % 2:
        grid[count // 2] = 0.0
    return grid


def real_tokens(b: Bench, n_norms: int | None = None) -> int:
    per_norm = sum(len(p) + len(c) for p, c in zip(b.seqs.prompts, b.seqs.continuations))
    return per_norm * (len(b.norms) if n_norms is None else n_norms)


# ------------------------------------------------------------------------------- methods


def _steering(vector, layers, share_lower: bool, share_prompts: bool):
    """``Steering`` and ``SweepPlan`` keyword sets, passing only the options this version has."""
    from repe_tradeoff.scoring import Steering
    from repe_tradeoff.sweep import SweepPlan

    opts = {"share_lower": share_lower, "share_prompts": share_prompts}
    s_fields = {f.name for f in dataclasses.fields(Steering)}
    p_fields = {f.name for f in dataclasses.fields(SweepPlan)}
    steering_kw = {k: v for k, v in opts.items() if k in s_fields}
    plan_kw = {k: v for k, v in opts.items() if k in p_fields}
    return Steering, SweepPlan, steering_kw, plan_kw


def run_ours(
    b: Bench,
    norms=None,
    layers=None,
    vector=None,
    *,
    share_lower=True,
    share_prompts=True,
    seqs=None,
    task=None,
    batch_size=None,
):
    """The sweep's scoring as ``run_sweep`` drives it, chunk by chunk, including the records."""
    import torch

    from repe_tradeoff.batching import score_chunk
    from repe_tradeoff.sweep import _chunks

    norms = b.norms if norms is None else norms
    layers = b.layers if layers is None else layers
    vector = b.vector if vector is None else vector
    seqs = b.seqs if seqs is None else seqs
    task = b.task if task is None else task
    Steering, SweepPlan, steering_kw, plan_kw = _steering(
        vector, layers, share_lower, share_prompts
    )
    if batch_size:
        plan_kw["batch_size"] = batch_size
    plan = SweepPlan(norms=list(norms), tasks=[task], layers=list(layers), **plan_kw)
    steering = Steering(
        vector=vector,
        layers=tuple(layers),
        positions=plan.positions,
        operator=plan.operator,
        **steering_kw,
    )
    out = torch.empty(len(seqs.prompts), len(norms))
    n_records = 0
    for ids in _chunks(task, plan.chunk_size, None):
        wanted = set(ids)
        rows = [r for r, owner in enumerate(seqs.owners) if owner in wanted]
        scores = score_chunk(b.model, b.tokenizer, seqs, rows, plan, steering)
        n_records += len(task.records(scores, plan.norms, ids))
        out[rows] = scores.continuation
    n_items = len(task.items if task.kind == "alignment" else task.questions)
    assert n_records == n_items * len(norms)
    return out


def _option_logliks(logits, ids_rows, prompt_lens, cont_lens):
    """Summed log-probabilities of each row's continuation tokens from full-sequence logits."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values = []
    for i, (lp, lc) in enumerate(zip(prompt_lens, cont_lens)):
        pos = torch.arange(lp - 1, lp + lc - 1, device=logits.device)
        tgt = ids_rows[i, lp : lp + lc]
        values.append(float(logprobs[i, pos, tgt].sum()))
    return values


def run_loop(b: Bench, norms=None, per_norm_seconds: list | None = None):
    """The per-norm protocol: hooks anew per norm, one full forward per sequence."""
    import torch

    from repe_tradeoff.steering import steer

    norms = b.norms if norms is None else norms
    out = torch.empty(len(b.seqs.prompts), len(norms))
    with torch.no_grad():
        for k, r in enumerate(norms):
            t0 = time.perf_counter()
            with steer(b.model, b.vector, r, layers=b.layers):
                for s, (p, c) in enumerate(zip(b.seqs.prompts, b.seqs.continuations)):
                    ids = torch.tensor([list(p) + list(c)], device=b.model.device)
                    logits = b.model(ids).logits
                    out[s, k] = _option_logliks(logits, ids, [len(p)], [len(c)])[0]
            if per_norm_seconds is not None:
                per_norm_seconds.append(time.perf_counter() - t0)
    return out


def loop_norms(b: Bench, count: int) -> list[int]:
    """Indices of the norms the loop runs: the extremes first, then inwards."""
    n = len(b.norms)
    if count <= 0 or count >= n:
        return list(range(n))
    order = sorted(range(n), key=lambda k: (-abs(b.norms[k]), k))
    return sorted(order[:count])


def _batches(b: Bench, batch: int):
    """Right-padded batches of every (question, option) sequence, similar lengths together."""
    import torch

    pad = b.tokenizer.pad_token_id if b.tokenizer.pad_token_id is not None else 0
    order = sorted(
        range(len(b.seqs.prompts)),
        key=lambda s: (len(b.seqs.prompts[s]) + len(b.seqs.continuations[s]), s),
    )
    out = []
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        seqs = [list(b.seqs.prompts[s]) + list(b.seqs.continuations[s]) for s in rows]
        width = max(len(x) for x in seqs)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, x in enumerate(seqs):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        out.append((rows, ids.to(b.model.device), mask.to(b.model.device)))
    return out


def peer_vector(b: Bench):
    from steering_vectors import SteeringVector as PeerVector

    # apply(model, multiplier=r) adds r · layer_activations[layer] to each block's output
    return PeerVector(
        layer_activations={l: b.vector[l].float().clone() for l in b.layers},
        layer_type="decoder_block",
    )


def run_peer(b: Bench, batch: int, norms=None):
    """The steering-vectors library: one ``apply`` per norm, batched full forwards."""
    import torch

    norms = b.norms if norms is None else norms
    vec = peer_vector(b)
    batches = _batches(b, batch)
    out = torch.empty(len(b.seqs.prompts), len(norms))
    with torch.no_grad():
        for k, r in enumerate(norms):
            with vec.apply(b.model, multiplier=r):
                for rows, ids, mask in batches:
                    logits = b.model(input_ids=ids, attention_mask=mask).logits
                    values = _option_logliks(
                        logits,
                        ids,
                        [len(b.seqs.prompts[s]) for s in rows],
                        [len(b.seqs.continuations[s]) for s in rows],
                    )
                    out[rows, k] = torch.tensor(values)
    return out


def run_limit_per_norm(b: Bench, batch: int, n_norms=None):
    """Plain full-model batched forwards of every sequence, once per norm."""
    import torch

    batches = _batches(b, batch)
    with torch.no_grad():
        for _ in range(len(b.norms) if n_norms is None else n_norms):
            for _, ids, mask in batches:
                b.model(input_ids=ids, attention_mask=mask).logits  # noqa: B018


@contextlib.contextmanager
def dry_base(model):
    """Record every (input_ids, attention_mask) given to the base model, without running it.

    The base model returns zeros of the right shape instead, so a whole scoring run costs only
    its bookkeeping; the recorded batches are exactly the ones a real run would compute.
    """
    from types import SimpleNamespace

    import torch

    base = model.base_model
    seen = []

    def fake_forward(input_ids=None, attention_mask=None, **kwargs):
        seen.append((input_ids.clone(), attention_mask.clone()))
        return SimpleNamespace(
            last_hidden_state=torch.zeros(
                *input_ids.shape, model.config.hidden_size, device=input_ids.device, dtype=model.dtype
            )
        )

    base.forward = fake_forward
    try:
        yield seen
    finally:
        del base.forward


def capture_same_batches(b: Bench):
    """The padded batches ``ours_no_sharing`` runs through the base model."""
    with dry_base(b.model) as seen:
        run_ours(b, share_lower=False, share_prompts=False)
    return seen


def run_limit_same_batches(b: Bench, batches):
    import torch

    with torch.no_grad():
        for ids, mask in batches:
            b.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)


@contextlib.contextmanager
def meter(model):
    """Wall time inside the decoder blocks and the output embedding, and the token-rows the blocks processed."""
    from repe_tradeoff.models import find_layers

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


# ------------------------------------------------------------------------------- measuring


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn):
    """One call: seconds, result, peak RSS and RSS at the start (KiB), load average before/after."""
    load_before = _load()
    before = _reset_peak()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    _, peak = _rss_kib()
    return {
        "seconds": seconds,
        "peak_kib": peak,
        "before_kib": before,
        "load_before": load_before,
        "load_after": _load(),
    }, result


def method_fns(b: Bench, peer_batch: int, same_batches, loop_idx, loop_times):
    return {
        "ours": lambda: run_ours(b),
        "ours_flat_shared_lower": lambda: run_ours(b, share_prompts=False),
        "ours_no_sharing": lambda: run_ours(b, share_lower=False, share_prompts=False),
        "loop": lambda: run_loop(
            b, norms=[b.norms[k] for k in loop_idx], per_norm_seconds=loop_times
        ),
        "peer": lambda: run_peer(b, peer_batch),
        "limit_same_batches": lambda: run_limit_same_batches(b, same_batches),
        "limit_per_norm": lambda: run_limit_per_norm(b, peer_batch),
    }


def warm_up(b: Bench) -> None:
    """One small forward of each kind, so no method pays for first-call setup."""
    import torch

    from repe_tradeoff.steering import steer

    ids = torch.tensor([list(b.seqs.prompts[0]) + list(b.seqs.continuations[0])], device=b.model.device)
    with torch.no_grad(), steer(b.model, b.vector, 1.0, layers=b.layers):
        b.model(ids)
        b.model(ids.repeat(8, 1))
    with torch.no_grad():
        b.model.base_model(input_ids=ids.repeat(8, 1), use_cache=False)


def worker_main(args) -> None:
    """Fresh process: load, warm up, run one method once; report its time and peak RSS.

    VmHWM is read, not ``ru_maxrss``: a child's ``ru_maxrss`` also counts the parent's resident
    memory at the time it was spawned (Linux keeps the pre-exec high-water mark).
    """
    spec = json.loads(args.worker_spec.read_text())
    b = setup(spec["questions"], spec["norms"], spec["span"], spec["threads"])
    warm_up(b)
    same = capture_same_batches(b) if args.worker == "limit_same_batches" else None
    loop_idx = loop_norms(b, spec["loop_norms"])
    fn = method_fns(b, spec["peer_batch"], same, loop_idx, [])[args.worker]
    setup_hwm = _rss_kib()[1]
    m, _ = timed(fn)
    m["setup_hwm_kib"] = setup_hwm
    m["process_peak_kib"] = max(setup_hwm, m["peak_kib"])
    print(json.dumps({"method": args.worker, **m}))


def isolated_memory(args, spec_path: Path) -> dict:
    out = {}
    for method in MAIN_METHODS:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            method,
            "--worker-spec",
            str(spec_path),
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=os.environ.copy(), check=False
        )
        if proc.returncode != 0:
            out[method] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
            print(f"  isolated {method}: failed: {out[method]['error']}", flush=True)
            continue
        out[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"  fresh process {method:24s} peak {out[method]['process_peak_kib'] / 1024:6.0f} MiB "
            f"(method {out[method]['peak_kib'] / 1024:6.0f} MiB)",
            flush=True,
        )
    return out


def demo_memory(args) -> dict:
    """Max RSS of `repe-tradeoff demo` (quick unless --full-demo) under /usr/bin/time -v."""
    exe = ROOT / ".venv" / "bin" / "repe-tradeoff"
    if not exe.exists():
        exe = Path(sys.executable).with_name("repe-tradeoff")
    out_dir = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    cmd = [str(exe), "demo", "--out", str(out_dir)] + ([] if args.full_demo else ["--quick"])
    timer = Path("/usr/bin/time")
    full = ([str(timer), "-v"] if timer.exists() else []) + cmd
    t0 = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, env=os.environ.copy(), check=False)
    seconds = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    with contextlib.suppress(OSError):
        import shutil

        shutil.rmtree(out_dir)
    shown = ["/usr/bin/time", "-v", ".venv/bin/repe-tradeoff", "demo"] + (
        [] if args.full_demo else ["--quick"]
    )
    return {
        "command": " ".join(shown + ["--out", "/tmp/bench-demo"]),
        "variant": "full" if args.full_demo else "quick",
        "returncode": proc.returncode,
        "seconds": seconds,
        "max_rss_kib": int(m.group(1)) if m else None,
        "stderr_tail": proc.stderr.strip().splitlines()[-3:] if proc.returncode else [],
    }


def demo_chunk_memory(b: Bench) -> dict:
    """Memory of the demo's heaviest scoring step: one alignment chunk (forced-choice responses) at
    the SweepPlan defaults, split into what the forward needs and what the full-vocabulary
    log-probabilities of the response tokens add."""

    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.tasks import AlignmentTask

    behavior = load_behavior("harmfulness")
    task = AlignmentTask(behavior.name, list(behavior.items)[:16])
    seqs = task.sequences(b.tokenizer)
    _, SweepPlan, _, plan_kw = _steering(b.vector, b.layers, True, True)
    plan = SweepPlan(norms=list(b.norms), tasks=[task], layers=list(b.layers), **plan_kw)
    n_rows = len(plan.norms) + (0.0 not in plan.norms)
    step = max(1, plan.batch_size // n_rows)
    lens_c = [len(c) for c in seqs.continuations]
    worst = max(lens_c) - 1
    vocab = b.model.get_output_embeddings().weight.shape[0]
    logits_gib = step * n_rows * worst * vocab * 4 / GiB
    sb = dataclasses.replace(b, task=task, seqs=seqs)
    m, _ = timed(lambda: run_ours(sb))
    return {
        "items": 16,
        "sequences": len(seqs.prompts),
        "norms": len(plan.norms),
        "batch_rows": step * n_rows,
        "max_continuation": max(lens_c),
        "vocab": vocab,
        "one_logits_tensor_gib": logits_gib,
        "peak_rss_mib": m["peak_kib"] / 1024,
        "above_start_mib": (m["peak_kib"] - m["before_kib"]) / 1024,
        "seconds": m["seconds"],
    }


# ------------------------------------------------------------------------------- experiments


def main_table(b: Bench, args) -> dict:
    t0 = time.perf_counter()
    same_batches = capture_same_batches(b)
    print(
        f"  captured the {len(same_batches)} batches of ours_no_sharing ({time.perf_counter() - t0:.1f} s, dry run)",
        flush=True,
    )
    loop_idx = loop_norms(b, args.loop_norms)
    loop_times: list[float] = []
    fns = method_fns(b, args.peer_batch, same_batches, loop_idx, loop_times)
    precise = ("ours", "ours_no_sharing", "limit_same_batches")
    runs = {m: [] for m in MAIN_METHODS}
    outputs = {}
    for rep in range(max(args.reps, args.ref_reps)):
        shift = rep % len(MAIN_METHODS)
        order = list(MAIN_METHODS[shift:] + MAIN_METHODS[:shift])
        for method in order:
            if rep >= (args.reps if method in precise else args.ref_reps):
                continue
            m, result = timed(fns[method])
            if method == "loop":
                m["measured_seconds"] = m["seconds"]
                m["seconds"] = (
                    m["seconds"] * len(b.norms) / len(loop_idx)
                )  # per-norm passes are identical
            runs[method].append(m)
            if result is not None:
                outputs[f"{method}#{rep}"] = result
            note = (
                f" ({len(loop_idx)} of {len(b.norms)} norms in {m['measured_seconds']:.1f} s)"
                if method == "loop"
                else ""
            )
            print(
                f"  rep {rep} {method:24s} {m['seconds']:8.2f} s{note}  peak RSS {m['peak_kib'] / 1024:6.0f} MiB  "
                f"load {m['load_before'][0]}",
                flush=True,
            )
    # the per-option log-likelihoods agree (the loop on the norms it ran)
    ref = outputs["ours#0"]
    diffs = {}
    for key, value in outputs.items():
        cols = loop_idx if key.startswith("loop#") else list(range(len(b.norms)))
        diffs[key] = float((value - ref[:, cols]).abs().max())
    worst = max(v for k, v in diffs.items() if k != "ours#0")
    check = {
        "reference": "ours#0",
        "max_abs_diff": diffs,
        "max": worst,
        "tolerance": 1e-3,
        "n_values": int(ref.numel()),
        "loop_norms": [b.norms[k] for k in loop_idx],
    }
    assert worst < check["tolerance"], f"outputs disagree: {diffs}"
    tokens = real_tokens(b)
    summary = {}
    for method, rs in runs.items():
        secs = [r["seconds"] for r in rs]
        med = statistics.median(secs)
        summary[method] = {
            "seconds_median": med,
            "seconds": secs,
            "reps": len(rs),
            "tokens_per_s": tokens / med,
            "peak_rss_mib": max(r["peak_kib"] for r in rs) / 1024,
            "extra_rss_mib": max(r["peak_kib"] - r["before_kib"] for r in rs) / 1024,
            "load_before": [r["load_before"][0] for r in rs],
        }
    summary["loop"]["per_norm_seconds"] = loop_times
    summary["loop"]["norms_run"] = len(loop_idx)
    t = {m: s["seconds_median"] for m, s in summary.items()}
    ratios = {
        "ours/loop": t["ours"] / t["loop"],
        "ours/peer": t["ours"] / t["peer"],
        "ours_no_sharing/limit_same_batches": t["ours_no_sharing"] / t["limit_same_batches"],
        "ours/limit_per_norm": t["ours"] / t["limit_per_norm"],
        "ours/limit_same_batches": t["ours"] / t["limit_same_batches"],
        "ours/ours_no_sharing": t["ours"] / t["ours_no_sharing"],
        "peer/limit_per_norm": t["peer"] / t["limit_per_norm"],
    }
    # the steering overhead rep by rep (each pair ran in the same repetition)
    pairs = [
        a["seconds"] / c["seconds"]
        for a, c in zip(runs["ours_no_sharing"], runs["limit_same_batches"])
    ]
    return {
        "summary": summary,
        "ratios": ratios,
        "overhead_per_rep": pairs,
        "check": check,
        "real_tokens": tokens,
        "n_batches_no_sharing": len(same_batches),
        "padded_token_rows_no_sharing": int(sum(ids.numel() for ids, _ in same_batches)),
    }


def breakdown(b: Bench, args) -> dict:
    """Where the time goes: blocks, output embedding and the rest, for each variant (on a subset)."""
    sb = subset(b, args.detail_questions)
    same = capture_same_batches(sb)
    out = {}
    for label, fn in (
        ("ours_no_sharing", lambda: run_ours(sb, share_lower=False, share_prompts=False)),
        ("limit_same_batches", lambda: run_limit_same_batches(sb, same)),
        ("ours_flat_shared_lower", lambda: run_ours(sb, share_prompts=False)),
        ("ours", lambda: run_ours(sb)),
    ):
        with meter(sb.model) as st:
            m, _ = timed(fn)
        out[label] = {
            "seconds": m["seconds"],
            "block_s": st["block_s"],
            "lm_head_s": st["lm_head_s"],
            "lm_head_rows": st["lm_head_rows"],
            "token_layers": st["token_layers"],
            "other_s": m["seconds"] - st["block_s"] - st["lm_head_s"],
        }
    # logits rows a position-exact scorer would need: one per option token
    out["needed_lm_head_rows"] = sum(len(c) for c in sb.seqs.continuations) * (
        len(b.norms) + (0.0 not in b.norms)
    )
    return out


def subset(b: Bench, questions: int):
    from repe_tradeoff.tasks import MultipleChoiceTask

    task = MultipleChoiceTask(b.task.name, list(b.task.questions)[:questions], "cloze", "plain")
    return dataclasses.replace(b, task=task, seqs=task.sequences(b.tokenizer))


def norms_scaling(b: Bench, args) -> dict:
    """Time vs grid size: ours (all sharing) against plain per-norm forwards."""
    sb = subset(b, args.scaling_questions)
    out = []
    counts = [int(x) for x in args.scaling_norms.split(",")]
    for rep in range(max(1, args.scaling_reps)):
        for n in counts if rep % 2 == 0 else counts[::-1]:
            grid = norm_grid(n, args.span * b.scale)
            s_ours = timed(lambda grid=grid: run_ours(sb, norms=grid))[0]["seconds"]
            s_lim = timed(lambda n=n: run_limit_per_norm(sb, args.peer_batch, n_norms=n))[0][
                "seconds"
            ]
            out.append({"rep": rep, "norms": n, "ours_s": s_ours, "limit_per_norm_s": s_lim})
            print(
                f"  norms {n:3d}: ours {s_ours:7.2f} s   limit_per_norm {s_lim:7.2f} s", flush=True
            )
    rows = []
    for n in counts:
        o = statistics.median(r["ours_s"] for r in out if r["norms"] == n)
        lim = statistics.median(r["limit_per_norm_s"] for r in out if r["norms"] == n)
        rows.append(
            {
                "norms": n,
                "ours_s": o,
                "limit_per_norm_s": lim,
                "ratio": o / lim,
                "real_tokens": real_tokens(sb, n),
            }
        )
    return {
        "questions": args.scaling_questions,
        "sequences": len(sb.seqs.prompts),
        "rows": rows,
        "raw": out,
    }


def depth_scaling(b: Bench, args) -> dict:
    """Saving from running the blocks below the first steered one once per sequence."""
    from repe_tradeoff.vectors import SteeringVector

    sb = subset(b, args.detail_questions)
    L = b.n_layers
    out = []
    depths = [int(x) for x in args.depths.split(",")]
    k_rows = len(b.norms) + (0.0 not in b.norms)
    for rep in range(max(1, args.depth_reps)):
        for first in depths:
            layers = list(range(first, min(first + 8, L)))
            vec = SteeringVector({l: b.vector_all[l] for l in layers}, dict(b.vector_all.metadata))
            entry = {"rep": rep, "first": first, "layers": [layers[0], layers[-1]]}
            variants = (("no_share", False), ("share", True))
            for label, share in variants if rep % 2 == 0 else variants[::-1]:
                with meter(b.model) as st:
                    m, _ = timed(
                        lambda layers=layers, vec=vec, share=share: run_ours(
                            sb, layers=layers, vector=vec, share_lower=share
                        )
                    )
                entry[label] = {
                    "seconds": m["seconds"],
                    "block_s": st["block_s"],
                    "token_layers": st["token_layers"],
                }
            out.append(entry)
            print(
                f"  first layer {first:2d}: no share {entry['no_share']['seconds']:6.2f} s, "
                f"share {entry['share']['seconds']:6.2f} s",
                flush=True,
            )
    rows = []
    for first in depths:
        es = [e for e in out if e["first"] == first]
        ns = statistics.median(e["no_share"]["seconds"] for e in es)
        sh = statistics.median(e["share"]["seconds"] for e in es)
        block = statistics.median(e["no_share"]["block_s"] for e in es)
        fixed = ns - block
        tl_ns, tl_sh = es[0]["no_share"]["token_layers"], es[0]["share"]["token_layers"]
        ideal_simple = fixed + block * (L - first) / L  # lower blocks free
        ideal_exact = (
            fixed + block * tl_sh / tl_ns
        )  # lower blocks once per row instead of once per norm
        rows.append(
            {
                "first": first,
                "layers": es[0]["layers"],
                "no_share_s": ns,
                "share_s": sh,
                "block_s_no_share": block,
                "fixed_s": fixed,
                "measured_fraction": sh / ns,
                "ideal_fraction_upper_free": ideal_simple / ns,
                "ideal_fraction_token_layers": ideal_exact / ns,
                "token_layers_no_share": tl_ns,
                "token_layers_share": tl_sh,
                "share_block_s": statistics.median(e["share"]["block_s"] for e in es),
            }
        )
    return {
        "questions": args.detail_questions,
        "n_layers": L,
        "rows_per_sequence": k_rows,
        "rows": rows,
        "raw": out,
    }


def profile_ours(b: Bench, args) -> dict:
    """Where ours spends its time: torch.profiler over one run (top operators by self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    sb = subset(b, args.detail_questions)
    res = {}
    for label, kw in (
        ("ours", {}),
        ("ours_no_sharing", {"share_lower": False, "share_prompts": False}),
    ):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_ours(sb, **kw)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        res[label] = {
            "total_self_cpu_ms": total / 1000,
            "top": [
                {
                    "op": e.key,
                    "self_cpu_ms": e.self_cpu_time_total / 1000,
                    "share": e.self_cpu_time_total / total,
                    "calls": e.count,
                }
                for e in top
            ],
        }
    return res


# ------------------------------------------------------------------------------- report


def machine_info(load_start) -> dict:
    import torch
    import transformers

    model_name = platform.processor() or "unknown"
    with contextlib.suppress(Exception):
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"Model name:\s*(.+)", text)
        if m:
            model_name = m.group(1).strip()
    load = _load()
    return {
        "cpu": model_name,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": load_start,
        "loadavg_at_end": load,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["norms_scaling"]["rows"]
    x = [r["norms"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(x, [r["ours_s"] for r in rows], "o-", label="ours (batched sweep, sharing on)")
    ax.plot(
        x,
        [r["limit_per_norm_s"] for r in rows],
        "s--",
        label="limit_per_norm (plain forward per norm)",
    )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("number of norms in the grid")
    ax.set_ylabel("wall time (s, median)")
    nq = results["norms_scaling"]["questions"]
    ax.set_title(f"Scoring {nq} basic-qa questions × 4 options, SmolLM2-135M, CPU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def verdicts(results: dict) -> list[dict]:
    r = results["main"]["ratios"]
    overhead = statistics.median(results["main"]["overhead_per_rep"])
    out = [
        {
            "target": "ours ≥ 5× faster than the per-norm loop",
            "value": 1 / r["ours/loop"],
            "unit": "×",
            "met": 1 / r["ours/loop"] >= TARGETS["speedup_vs_loop"],
        },
        {
            "target": "ours ≤ 0.5× the peer's time",
            "value": r["ours/peer"],
            "unit": "× peer",
            "met": r["ours/peer"] <= TARGETS["ratio_vs_peer"],
        },
        {
            # paired within a repetition, so a slow spell of the shared machine hits both sides
            "target": "steering overhead ≤ 1.10× (ours_no_sharing / limit_same_batches, median of "
            "the per-repetition ratios)",
            "value": overhead,
            "unit": "×",
            "met": overhead <= TARGETS["steering_overhead"],
        },
        {
            "target": "ours below limit_per_norm",
            "value": r["ours/limit_per_norm"],
            "unit": "× limit",
            "met": r["ours/limit_per_norm"] < TARGETS["ratio_vs_limit_per_norm"],
        },
    ]
    for key in ("demo_memory", "demo_memory_full"):
        demo = results.get(key)
        if demo and demo.get("max_rss_kib"):
            gib = demo["max_rss_kib"] / 1024**2
            out.append(
                {
                    "target": f"peak memory of `demo{'' if demo['variant'] == 'full' else ' --quick'}` ≤ 3 GiB",
                    "value": gib,
                    "unit": "GiB",
                    "met": gib <= TARGETS["demo_peak_gib"] and demo["returncode"] == 0,
                }
            )
    return out


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def write_markdown(results: dict, path: Path) -> None:
    m = results["main"]
    cfg = results["config"]
    mach = results["machine"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmark: the norm sweep")
    add("")
    add(
        f"Generated by `benchmarks/bench_sweep.py` (`make bench`) on {results['date']}, in "
        f"{results['total_seconds'] / 60:.1f} minutes. Raw numbers: [`results.json`](results.json); plot: "
        f"[`time_vs_norms.png`](time_vs_norms.png). The same comparison on a GPU, and the paper's "
        f"protocol on 1B and 8B-sized models: [`RESULTS-gpu.md`](RESULTS-gpu.md) (`bench_gpu.py`)."
    )
    add("")
    add("## Setup")
    add("")
    add(f"- Command: `{results['command']}`")
    add(
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB RAM; torch {mach['torch']}, "
        f"transformers {mach['transformers']}, Python {mach['python']}; {mach['torch_threads']} torch thread(s) for "
        f"every method (torch's default here is {cfg['default_threads']}; with two threads a forward slowed "
        f"down several-fold whenever another process ran on the second core). Load average {mach['loadavg_at_start']} at the start and "
        f"{mach['loadavg_at_end']} at the end: the machine is shared with other processes, so the methods run "
        f"interleaved in a rotating order per repetition and medians are reported."
    )
    add(
        f"- Model: the embedded SmolLM2-135M-Instruct (float32, {cfg['n_layers']} blocks). Vector: pca of the "
        f"built-in harmfulness pairs (`extract`), steered on blocks {cfg['layers'][0]}–{cfg['layers'][-1]} "
        f"(`middle`), every token position, operator add."
    )
    add(
        f"- Task: the first {cfg['questions']} basic-qa questions as cloze, 4 options each → {cfg['sequences']} "
        f"(question, option) sequences, {cfg['tokens_per_norm']} tokens per norm. {len(cfg['norms'])} norms, "
        f"±{cfg['span']} × the mean residual norm of the steered blocks ({cfg['scale']:.1f}): "
        f"{', '.join(f'{r:g}' for r in cfg['norms'])}."
    )
    add(
        f"- Repetitions: {cfg['reps']} of ours, ours_no_sharing and limit_same_batches (the steering-overhead "
        f"ratio needs them); {cfg['ref_reps']} of the slower references. The loop ran "
        f"{m['summary']['loop']['norms_run']} of the {len(cfg['norms'])} norms (the extremes, "
        f"{', '.join(f'{r:g}' for r in m['check']['loop_norms'])}), each norm a separately timed, identical "
        f"pass over every sequence ({', '.join(_f(x) for x in m['summary']['loop']['per_norm_seconds'])} s); "
        f"its time is scaled to the whole grid. Use `--loop-norms 0 --ref-reps 3` for the full measurement "
        f"(about {_full_extra_minutes(results):.0f} minutes more)."
    )
    add(
        f"- tokens/s = real tokens (sum of sequence lengths × norms = {m['real_tokens']}) / median wall time, "
        f"the same numerator for every method."
    )
    add("")
    add("### Methods")
    add("")
    add(
        "- **ours**: the sweep's scoring as `run_sweep` drives it — `sweep._score_chunk` per chunk of 16 items "
        "with the `SweepPlan` defaults (batch 256 rows, prompt sharing and lower-layer sharing on), then "
        "`HelpfulnessMetric.records` (no file writes)."
    )
    add(
        "- **ours_no_sharing**: the same with prompt sharing and lower-layer sharing off: every (sequence, norm) "
        "row runs the whole model."
    )
    add(
        "- **loop**: the per-norm protocol: `with steer(model, v, r, layers=…)` per norm, one "
        "`model(input_ids).logits` per sequence (batch 1), log-softmax, sum of the option tokens' log-probs."
    )
    add(
        f"- **peer**: `steering_vectors.SteeringVector(layer_activations={{layer: unit direction}}, "
        f'layer_type="decoder_block")`, one `with vec.apply(model, multiplier=r)` per norm, full `model(...)` '
        f"calls on right-padded batches of {cfg['peer_batch']} length-sorted sequences."
    )
    add(
        "- **limit_same_batches**: plain `model.base_model` forwards of exactly the padded batches "
        "ours_no_sharing runs (rows = sequence × norm, captured from a dry run of it): the cost floor of those "
        "forwards, with no steering, logits or records."
    )
    add(
        f"- **limit_per_norm**: plain full-model forwards of every sequence once per norm (batches of "
        f"{cfg['peer_batch']}, as peer): the cost of merely computing each norm's logits separately."
    )
    add("")
    add("## Results")
    add("")
    iso = results.get("isolated_memory") or {}
    head = "| method | median time (s) | reps (s) | tokens/s | peak RSS (MiB) | RSS above start (MiB) |"
    rule = "|---|---:|---|---:|---:|---:|"
    if iso:
        head += " fresh process: method peak / whole process (MiB) |"
        rule += "---:|"
    add(head)
    add(rule)
    for method in MAIN_METHODS:
        s = m["summary"][method]
        row = (
            f"| {method} | {_f(s['seconds_median'])} | {', '.join(_f(x) for x in s['seconds'])} | "
            f"{s['tokens_per_s']:.0f} | {s['peak_rss_mib']:.0f} | {s['extra_rss_mib']:.0f} |"
        )
        if iso:
            i = iso.get(method, {})
            row += (
                f" {i['peak_kib'] / 1024:.0f} / {i['process_peak_kib'] / 1024:.0f} |"
                if "peak_kib" in i
                else " – |"
            )
        add(row)
    add("")
    add(
        "Peak RSS is the process's high-water mark during the method (reset before each method, after freed "
        "heap is returned to the OS), so it includes the loaded model and libraries; 'RSS above start' is that "
        "peak minus the RSS when the method started (the largest over the repetitions)."
        + (
            " The fresh-process column comes from a new process per method that loaded the model, warmed up "
            "and ran only that method once: the method's peak (as above) and the process's whole high-water "
            "mark (VmHWM; not `ru_maxrss`, which for a child also counts its parent's memory at spawn time)."
            if iso
            else ""
        )
    )
    add("")
    add("| ratio | value |")
    add("|---|---:|")
    for k, v in m["ratios"].items():
        add(f"| {k} | {v:.3f} |")
    add("")
    add(
        f"Steering overhead per repetition (ours_no_sharing / limit_same_batches of the same repetition): "
        f"{', '.join(_f(x, 3) for x in m['overhead_per_rep'])}."
    )
    add("")
    c = m["check"]
    add(
        f"**Outputs agree**: the per-option log-likelihoods ({c['n_values']} values per method and repetition; "
        f"the loop's at the norms it ran) of ours_no_sharing, loop and peer differ from "
        f"ours by at most {c['max']:.1e} (asserted < {c['tolerance']:g})."
    )
    add("")
    add("## Targets")
    add("")
    add("| target | measured | met |")
    add("|---|---:|---|")
    for v in results["verdicts"]:
        add(f"| {v['target']} | {v['value']:.3g} {v['unit']} | {'yes' if v['met'] else '**no**'} |")
    add("")
    for key in ("demo_memory", "demo_memory_full"):
        demo = results.get(key)
        if not demo:
            continue
        rss = (
            f"{demo['max_rss_kib'] / 1024**2:.2f} GiB"
            if demo.get("max_rss_kib")
            else "not measured"
        )
        add(
            f"Demo memory: `{demo['command']}` (the {demo['variant']} demo"
            + (
                ", measured separately with `--demo-only --full-demo`"
                if key == "demo_memory_full"
                else ""
            )
            + f") → maximum resident set size {rss}, {demo['seconds']:.0f} s, exit code {demo['returncode']}."
        )
        add("")
    bd = results.get("breakdown")
    if bd:
        add("## Where the time goes")
        add("")
        add(
            f"Timing hooks on the decoder blocks and the output embedding, one run each on {cfg['detail_questions']} "
            f"questions × {len(cfg['norms'])} norms:"
        )
        add("")
        add(
            "| run | total (s) | decoder blocks (s) | output embedding (s) | rest (s) | token-rows through the blocks | logit rows |"
        )
        add("|---|---:|---:|---:|---:|---:|---:|")
        for label in ("limit_same_batches", "ours_no_sharing", "ours_flat_shared_lower", "ours"):
            x = bd[label]
            add(
                f"| {label} | {_f(x['seconds'])} | {_f(x['block_s'])} | {_f(x['lm_head_s'])} | {_f(x['other_s'])} | "
                f"{x['token_layers']} | {x['lm_head_rows']} |"
            )
        add("")
        add(
            f"ours_flat_shared_lower is ours with prompt sharing off (lower-layer sharing on). The option "
            f"tokens need {bd['needed_lm_head_rows']} logit rows in this run; sharing the prompts needs fewer "
            f"(one next-token row per question and norm serves all its options' first tokens)."
        )
        add("")
    dc = results.get("demo_chunk")
    if dc:
        add(
            f"Memory of the demo's heaviest scoring step (one alignment chunk: {dc['items']} forced-choice items, "
            f"{dc['sequences']} sequences, responses up to {dc['max_continuation']} tokens, {dc['norms']} norms, "
            f"{dc['batch_rows']} rows per forward): RSS rises {dc['above_start_mib']:.0f} MiB above its start "
            f"(peak {dc['peak_rss_mib']:.0f} MiB); one float32 tensor of full-vocabulary logits over those rows "
            f"and response positions is {dc['one_logits_tensor_gib'] * 1024:.0f} MiB."
        )
        add("")
    add("## Scaling with the number of norms")
    add("")
    ns = results["norms_scaling"]
    add(
        f"{ns['questions']} questions ({ns['sequences']} sequences), ours with the defaults (all sharing on), "
        f"limit_per_norm as above; median of {results['config']['scaling_reps']} repetition(s). A grid without 0 "
        f"costs ours one more norm (it always evaluates 0, the reference of `logit_shift`)."
    )
    add("")
    add("| norms | ours (s) | limit_per_norm (s) | ours / limit | real tokens |")
    add("|---:|---:|---:|---:|---:|")
    for r in ns["rows"]:
        add(
            f"| {r['norms']} | {_f(r['ours_s'])} | {_f(r['limit_per_norm_s'])} | {r['ratio']:.3f} | {r['real_tokens']} |"
        )
    add("")
    add("![time vs number of norms](time_vs_norms.png)")
    add("")
    add("## Scaling with the depth of the first steered layer")
    add("")
    ds = results["depth_scaling"]
    add(
        f"{ds['questions']} questions, {len(cfg['norms'])} norms, 8 steered blocks from the first one, "
        f"lower-layer sharing off ('no share') and on ('share'), prompt sharing on in both; median of "
        f"{results['config']['depth_reps']} repetition(s). 'fixed' is the no-share time outside the decoder blocks "
        f"(embedding, logits, log-softmax, records, Python), measured with timing hooks on the blocks. "
        f"Ideal (upper only) = (fixed + block time × (L − first)/L) / no-share time, the brief's ideal: blocks "
        f"below the first steered one free. Ideal (token-rows) charges them once per sequence instead, from the "
        f"counted token-rows through the blocks: (fixed + block time × rows(share)/rows(no share)) / no-share time."
    )
    add("")
    add(
        "| first | blocks | no share (s) | share (s) | share / no share | ideal (upper only) | ideal (token-rows) | fixed (s) | token-rows no share → share |"
    )
    add("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for r in ds["rows"]:
        add(
            f"| {r['first']} | {r['layers'][0]}–{r['layers'][1]} | {_f(r['no_share_s'])} | {_f(r['share_s'])} | "
            f"{r['measured_fraction']:.3f} | {r['ideal_fraction_upper_free']:.3f} | "
            f"{r['ideal_fraction_token_layers']:.3f} | {_f(r['fixed_s'])} | "
            f"{r['token_layers_no_share']} → {r['token_layers_share']} |"
        )
    add("")
    prof = results.get("profile")
    if prof:
        add("## Profile")
        add("")
        add(
            f"torch.profiler, one run each on {cfg['detail_questions']} questions × {len(cfg['norms'])} norms, "
            f"top operators by self CPU time:"
        )
        add("")
        for label, p in prof.items():
            add(
                f"- **{label}** (total self CPU {p['total_self_cpu_ms']:.0f} ms): "
                + "; ".join(f"`{t['op']}` {100 * t['share']:.0f}%" for t in p["top"][:8])
            )
        add("")
    add("## Interpretation")
    add("")
    for para in results["interpretation"]:
        add(para)
        add("")
    path.write_text("\n".join(lines).rstrip() + "\n")


def _full_extra_minutes(results: dict) -> float:
    """Extra time of `--loop-norms 0 --ref-reps 3` over this run's references."""
    sm = results["main"]["summary"]
    full = 3 * sum(sm[k]["seconds_median"] for k in ("loop", "peer", "limit_per_norm"))
    ran = sum(sum(sm[k]["seconds"]) for k in ("peer", "limit_per_norm"))
    ran += sum(sm["loop"]["per_norm_seconds"])
    return max(0.0, full - ran) / 60


def _block_delta(delta: float, n_hooked: int) -> str:
    if delta <= 0:
        return (
            f"{_f(delta)} s (the {n_hooked} hooked blocks ran no slower than the plain ones: the r·v "
            f"hooks cost less than the run-to-run noise)"
        )
    return f"{_f(delta)} s (the r·v hooks on {n_hooked} blocks)"


def interpretation(results: dict) -> list[str]:
    m = results["main"]
    r = m["ratios"]
    t = {k: v["seconds_median"] for k, v in m["summary"].items()}
    cfg = results["config"]
    out = [
        (
            f"Sharing is where the speed comes from. The four sequences of a question share its prompt, so with "
            f"prompt sharing the {cfg['sequences']} sequences run as {cfg['questions']} prompts (once per norm) "
            f"plus the option tokens on their KV cache; with lower-layer sharing the blocks below the first "
            f"steered one ({cfg['layers'][0]} of {cfg['n_layers']}) run once instead of once per norm. Ours takes "
            f"{_f(t['ours'])} s: {r['ours/ours_no_sharing']:.2f}× the {_f(t['ours_no_sharing'])} s without "
            f"sharing, and "
            f"{r['ours/limit_per_norm']:.2f}× the {_f(t['limit_per_norm'])} s that plain unsteered forwards of "
            f"every sequence at every norm take."
        ),
        (
            f"Against the per-norm loop (batch 1, hooks per norm, logits at every position) ours is "
            f"{1 / r['ours/loop']:.0f}× faster; against the steering-vectors library, batched {cfg['peer_batch']} "
            f"sequences per forward, {1 / r['ours/peer']:.1f}× faster ({r['ours/peer']:.2f}× its time). The "
            f"library takes {r['peer/limit_per_norm']:.2f}× limit_per_norm, the same forwards without hooks: the "
            f"difference is its hooks plus the log-softmax over the full-vocabulary logits at every position "
            f"that the protocol computes. Neither reference can share work across norms, which is the gap to ours."
        ),
    ]
    oh = statistics.median(m["overhead_per_rep"])
    bd = results.get("breakdown")
    if bd:
        a, b = bd["ours_no_sharing"], bd["limit_same_batches"]
        limit = TARGETS["steering_overhead"]
        verdict = "within" if oh <= limit else f"{100 * (oh / limit - 1):.1f}% above"
        out.append(
            f"Steering overhead: without sharing, ours runs exactly the padded batches of the plain base-model "
            f"forward and takes {oh:.3f}× its time, the median of the per-repetition ratios ({verdict} the "
            f"{limit:.2f}× target; per repetition {', '.join(_f(x, 3) for x in m['overhead_per_rep'])}; the "
            f"ratio of the median times is {r['ours_no_sharing/limit_same_batches']:.3f}). The timed breakdown "
            f"({cfg['detail_questions']} questions) splits the {_f(a['seconds'] - b['seconds'])} s difference: "
            f"decoder blocks {_block_delta(a['block_s'] - b['block_s'], len(cfg['layers']))}, "
            f"output embedding {_f(a['lm_head_s'])} s ({a['lm_head_rows']} logit rows; the option tokens "
            f"need {bd['needed_lm_head_rows']}), and "
            f"log-softmax, gathers and records {_f(a['other_s'] - b['other_s'])} s."
        )
        f, n = bd["ours_flat_shared_lower"], bd["ours"]
        out.append(
            f"On the same subset, prompt sharing alone cuts the token-rows through the blocks from "
            f"{f['token_layers']} to {n['token_layers']} and the time from {_f(f['seconds'])} s to {_f(n['seconds'])} s "
            f"(lower-layer sharing on in both; ours_no_sharing: {_f(a['seconds'])} s, {a['token_layers']} token-rows)."
        )
    sm = m["summary"]
    demos = [results.get(k) for k in ("demo_memory", "demo_memory_full")]
    demos = [d for d in demos if d and d.get("max_rss_kib")]
    if demos:
        shown = " and ".join(
            f"{d['max_rss_kib'] / 1024**2:.2f} GiB ({'full' if d['variant'] == 'full' else 'quick'} demo)"
            for d in demos
        )
        out.append(
            f"Memory: the whole demo peaks at {shown}, under the 3 GiB target. In the table, ours needs "
            f"{sm['ours']['extra_rss_mib']:.0f} MiB above the loaded model at its largest, against "
            f"{sm['peer']['extra_rss_mib']:.0f} MiB for the peer, whose forwards materialise full-vocabulary "
            f"logits (and their log-softmax) at every position of {cfg['peer_batch']} sequences."
        )
    ds = results.get("depth_scaling")
    if ds:
        rows = [x for x in ds["rows"] if x["first"] > 0]
        if rows:
            gap = statistics.mean(
                x["measured_fraction"] - x["ideal_fraction_token_layers"] for x in rows
            )
            deepest = max(rows, key=lambda x: x["first"])
            out.append(
                f"Lower-layer sharing delivers close to its ideal: with the first steered block at "
                f"{deepest['first']} the sweep takes {deepest['measured_fraction']:.2f}× the unshared time, against "
                f"{deepest['ideal_fraction_token_layers']:.2f}× if the shared blocks cost only their token-rows and "
                f"{deepest['ideal_fraction_upper_free']:.2f}× if they were free; over the depths the measured "
                f"fraction is {gap:+.2f} above the token-row ideal on average: the row copies at the first "
                f"steered block (`fan_out`'s index_select of hidden states, masks and rotary tables, and the "
                f"per-row selection of the KV cache)."
            )
    return out


def render(results: dict, out_dir: Path) -> None:
    results["verdicts"] = verdicts(results)
    results["interpretation"] = interpretation(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    plot(results, out_dir / "time_vs_norms.png")
    write_markdown(results, out_dir / "RESULTS.md")


def demo_only(args) -> None:
    path = args.out_dir / "results.json"
    results = json.loads(path.read_text())
    print(f"demo peak memory ({'full' if args.full_demo else 'quick'})", flush=True)
    demo = demo_memory(args)
    results["demo_memory_full" if args.full_demo else "demo_memory"] = demo
    render(results, args.out_dir)
    print(f"max RSS {demo['max_rss_kib'] / 1024**2:.2f} GiB, {demo['seconds']:.0f} s → {path}")


def main() -> None:
    args = parse_args()
    if args.worker:
        worker_main(args)
        return
    if args.demo_only:
        demo_only(args)
        return
    import torch

    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load_start = _load()
    print("loading the model, the vector and the task", flush=True)
    b = setup(args.questions, args.norms, args.span, args.threads)
    warm_up(b)
    shown = [a for a in sys.argv[1:]]
    results: dict = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(
            ["HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sweep.py"]
            + [shlex.quote(a) for a in shown]
        ),
        "config": {
            "questions": args.questions,
            "sequences": len(b.seqs.prompts),
            "tokens_per_norm": real_tokens(b, 1),
            "norms": b.norms,
            "span": args.span,
            "scale": b.scale,
            "layers": b.layers,
            "n_layers": b.n_layers,
            "reps": args.reps,
            "ref_reps": args.ref_reps,
            "loop_norms": args.loop_norms,
            "peer_batch": args.peer_batch,
            "threads": torch.get_num_threads(),
            "default_threads": default_threads,
            "scaling_questions": args.scaling_questions,
            "detail_questions": args.detail_questions,
            "scaling_reps": args.scaling_reps,
            "depth_reps": args.depth_reps,
            "quick": args.quick,
        },
    }
    print(f"main table: {len(b.seqs.prompts)} sequences × {len(b.norms)} norms", flush=True)
    results["main"] = main_table(b, args)
    print("time vs number of norms", flush=True)
    results["norms_scaling"] = norms_scaling(b, args)
    print("time vs depth of the first steered layer", flush=True)
    results["depth_scaling"] = depth_scaling(b, args)
    print("time breakdown, profile, demo-chunk memory", flush=True)
    results["breakdown"] = breakdown(b, args)
    results["profile"] = profile_ours(b, args)
    results["demo_chunk"] = demo_chunk_memory(b)
    if args.isolated_memory:
        print("peak memory per method in fresh processes", flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(
                {
                    "questions": args.questions,
                    "norms": args.norms,
                    "span": args.span,
                    "threads": torch.get_num_threads(),
                    "peer_batch": args.peer_batch,
                    "loop_norms": args.loop_norms,
                },
                f,
            )
        results["isolated_memory"] = isolated_memory(args, Path(f.name))
        os.unlink(f.name)
    if not args.no_demo:
        print(f"demo peak memory ({'full' if args.full_demo else 'quick'})", flush=True)
        del b
        results["demo_memory"] = demo_memory(args)
    results["machine"] = machine_info(load_start)
    results["total_seconds"] = time.perf_counter() - t_start
    render(results, args.out_dir)
    print(f"done in {results['total_seconds']:.0f} s → {args.out_dir / 'RESULTS.md'}", flush=True)
    for v in results["verdicts"]:
        print(f"  {'met   ' if v['met'] else 'MISSED'} {v['target']}: {v['value']:.3g} {v['unit']}")


if __name__ == "__main__":
    main()
