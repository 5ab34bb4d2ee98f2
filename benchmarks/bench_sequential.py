"""The sequential plan against the dense 33-norm automatic grid, same vector, tasks and items, one process.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_sequential --vector runs/demo/vector.safetensors \
        [--limit 48] [--fluency] [--reference] [--out DIR]
    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_sequential --tiny      # the tiny model with outlier dimensions

Per arm: wall and CPU seconds of the process (all threads), and the *token rows* that reach the first
steered block (batch × sequence length of every call, generation steps included: the compute that
grows with the norms measured). ``--reference`` also sweeps the same tasks at 0:8:0.25 (the dense
reference of the budget edge; on the tiny model the range is scaled to its probe) and reports the
largest in-budget norm there, r* of the sequential plan and its measured loss, and the RMSE of the
refit prediction of P(correct) against every dense arm's measured means where P is within 0.15 of
r = 0. Results go to ``benchmarks/sequential*.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np

HERE = Path(__file__).resolve().parent


class RowCounter:
    """Counts batch × sequence rows entering one decoder block."""

    def __init__(self, block):
        self.rows = 0
        block.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states")
        self.rows += int(x.shape[0] * x.shape[1])


def _arm(name, lm, settings, vector, layers, out, counter, budget="0.05", tasks=None):
    from repe_tradeoff.theory import fit_run
    from repe_tradeoff.workflows.prepare import prepare_sweep
    from repe_tradeoff.workflows.sweep import run_sweep

    rows0, wall0, cpu0 = counter.rows, time.perf_counter(), time.process_time()
    plan, config = prepare_sweep(lm, settings, vector, layers, model_name="bench", command=None, out=out,
                                 budget=budget, tasks=tasks)
    run_sweep(lm.model, lm.tokenizer, vector, plan, out, config=config, limit=settings.limit)
    wall, cpu, rows = time.perf_counter() - wall0, time.process_time() - cpu0, counter.rows - rows0
    fits = fit_run(out, max_helpfulness_loss=budget, n_boot=100)
    rec = fits.get("recommendation") or {}
    return {"arm": name, "norms": len(config["norms"]), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "token_rows": rows, "recommended": rec.get("norm"), "alignment_gain": rec.get("alignment_gain"),
            "helpfulness_change": rec.get("helpfulness_change"),
            "sequential": config.get("sequential", {}).get("summary") if "sequential" in config else None}


def _curve(out: Path, task: str) -> dict[float, float]:
    values: dict[float, list[float]] = {}
    for line in (out / "items.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["task"] == task and rec.get("helpfulness") is not None:
            values.setdefault(float(rec["norm"]), []).append(rec["helpfulness"])
    return {r: float(np.mean(v)) for r, v in sorted(values.items())}


def _edge(curve: dict[float, float], budget: float, sign: float) -> float | None:
    """The largest norm on the side of ``sign`` before the first one that loses more than ``budget``."""
    p0 = curve[0.0]
    last = 0.0
    for r in sorted((r for r in curve if sign * r > 0), key=abs):
        if p0 - curve[r] > budget + 1e-12:
            return last
        last = r
    return last


def _refit_rmse(seq_out: Path, dense_out: Path, task: str) -> dict:
    from repe_tradeoff.theory.response.refit import item_probabilities, refit_helpfulness

    cfg = json.loads((seq_out / "config.json").read_text())["sequential"]
    records = [json.loads(x) for x in (seq_out / "items.jsonl").read_text().splitlines()]
    refit = refit_helpfulness(records, task, float(cfg.get("probe_step") or cfg["probe"]), leave_out=cfg.get("broken", ()))
    dense = _curve(dense_out, task)
    p0 = dense[0.0]
    norms = [r for r, p in dense.items() if abs(p - p0) <= 0.15]
    pred = item_probabilities(refit, norms).mean(axis=0)
    err = pred - np.array([dense[r] for r in norms])
    return {"norms": len(norms), "range": [min(norms), max(norms)], "rmse": float(np.sqrt(np.mean(err**2))),
            "max": float(np.abs(err).max())}


def _embedded(args, counter_for):
    from repe_tradeoff.models.loading import load_model
    from repe_tradeoff.vectors.vector import SteeringVector
    from repe_tradeoff.workflows.settings import SweepSettings

    model, tok = load_model("default")
    lm = NS(model=model, tokenizer=tok, revision=None)
    vector = SteeringVector.load(args.vector)
    layers = list(vector.layers)
    counter = counter_for(model, layers[0])
    base = {"behaviors": [{"name": "harmfulness"}], "helpfulness": [{"spec": "basic-qa"}], "limit": args.limit,
            "fluency": ["neutral"] if args.fluency else []}
    return lm, vector, layers, counter, SweepSettings, base, "basic-qa", None


def _tiny(args, counter_for):
    import torch

    from repe_tradeoff.workflows.settings import SweepSettings
    from tests.helpers import GenTok, sequential_setup

    torch.manual_seed(0)
    model, vector, tasks = sequential_setup()
    lm = NS(model=model, tokenizer=GenTok(), revision=None)
    counter = counter_for(model, 1)
    return lm, vector, [1, 2], counter, SweepSettings, {"batch_size": 256, "chunk_size": 4}, "qa", tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector", type=Path)
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--fluency", action="store_true", help="include the fluency task (the demo's tasks)")
    parser.add_argument("--reference", action="store_true", help="also the dense reference 0:8:0.25")
    parser.add_argument("--tiny", action="store_true", help="the tiny random model with outlier dimensions")
    parser.add_argument("--arms", default="sequential,dense")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    def counter_for(model, layer):
        from repe_tradeoff.models.loading import find_layers

        return RowCounter(find_layers(model)[layer])

    setup = _tiny if args.tiny else _embedded
    lm, vector, layers, counter, Settings, base, task, tasks = setup(args, counter_for)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-sequential-"))
    results = {"load_average": list(map(float, Path("/proc/loadavg").read_text().split()[:3])), "arms": []}
    arms = args.arms.split(",")
    for name in arms:
        points = None if name == "sequential" else 33
        settings = Settings(norms="auto", points=points, norm_unit="absolute", **base)
        results["arms"].append(_arm(name, lm, settings, vector, layers, root / name, counter, tasks=tasks))
        print(json.dumps(results["arms"][-1]), flush=True)
    if args.reference:
        seq = json.loads((root / "sequential" / "config.json").read_text())["sequential"]
        h = float(seq.get("probe_step") or seq["probe"])
        sign = float(seq["aligned_side"])
        # the embedded model's reference is 0:8:0.25; the tiny model's spans 1.6 × the edge's bracket
        step = 0.25 if not args.tiny else 1.6 * abs(seq["bracket"][1] or 32 * h) / 32
        grid = ",".join(f"{sign * step * k:g}" for k in range(33))
        ref_base = {k: v for k, v in base.items() if k != "fluency"}
        ref_tasks = None if tasks is None else [t for t in tasks if t.kind != "fluency"]
        settings = Settings(norms=grid, norm_unit="absolute", **ref_base)
        results["arms"].append(_arm("reference", lm, settings, vector, layers, root / "reference", counter,
                                    tasks=ref_tasks))
        ref = _curve(root / "reference", task)
        edge = _edge(ref, seq["budget_limit"], sign)
        seq_curve = _curve(root / "sequential", task)
        r_star = seq["recommended"]
        results["edge"] = {"reference_largest_in_budget": edge, "r_star": r_star,
                           "r_star_share": None if not edge else r_star / edge,
                           "loss_at_r_star": seq_curve[0.0] - seq_curve[r_star], "budget": seq["budget_limit"]}
        results["refit"] = {"reference": _refit_rmse(root / "sequential", root / "reference", task)}
        if "dense" in arms:
            results["refit"]["dense"] = _refit_rmse(root / "sequential", root / "dense", task)
    by = {a["arm"]: a for a in results["arms"]}
    if "sequential" in by and "dense" in by:
        results["ratio"] = {k: by["sequential"][k] / by["dense"][k] for k in ("wall_s", "cpu_s", "token_rows")
                            if by["dense"][k]}
    print(json.dumps({k: v for k, v in results.items() if k != "arms"}, indent=1))
    name = "sequential-tiny.json" if args.tiny else f"sequential-{args.limit}{'-fluency' if args.fluency else ''}.json"
    (HERE / name).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
