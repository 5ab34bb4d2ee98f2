"""The layer atlas against the sweep, as whole processes on the embedded model (one script, so
the ratios share the machine's state): `extract` + a 33-norm `sweep` of the middle layers, the
atlas of all 30 single layers, the atlas with bands 4 and 8 added, and full sweeps (automatic
grid) of three single layers, compared with the atlas' numbers for them.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_atlas [--limit 16] [--out runs/bench_atlas]

Writes ``benchmarks/atlas.json`` (raw numbers) and prints the RESULTS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECK_LAYERS = (4, 15, 25)  # early, middle, late


def timed(args: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "repe_tradeoff", "-q", *args], check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--points", type=int, default=17, help="norms of each checking sweep's automatic grid")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_atlas"))
    opts = parser.parse_args()
    out, n = opts.out, str(opts.limit)
    tasks = ["--alignment", "harmfulness", "--helpfulness", "basic-qa", "--limit", n]
    load = [os.getloadavg()]
    t = {"extract": timed(["extract", "--layers", "middle", "--out", str(out / "middle.safetensors")])}
    t["sweep_33"] = timed(["sweep", "--vector", str(out / "middle.safetensors"), "--norms=-0.4:0.4:0.025",
                           "--norm-unit", "residual", "--out", str(out / "sweep33"), *tasks])
    t["atlas_singles"] = timed(["atlas", "--layers", "all", "--bands", "1", "--exhaustive", "--confirm", "0", "--limit", n, "--out", str(out / "singles")])
    t["atlas_bands"] = timed(["atlas", "--layers", "all", "--bands", "1,4,8", "--exhaustive", "--confirm", "0", "--limit", n, "--out", str(out / "bands")])
    for layer in CHECK_LAYERS:
        t[f"sweep_layer_{layer}"] = timed(["sweep", "--vector", str(out / "bands" / "vector.safetensors"), "--layers",
                                           str(layer), "--norms", "auto", "--points", str(opts.points),
                                           "--norm-unit", "absolute", "--out", str(out / f"layer{layer}"), *tasks])
    load.append(os.getloadavg())
    from repe_tradeoff.runs import read_atlas, read_item_rows
    from repe_tradeoff.theory.decisions.layers import measured_numbers

    atlas = read_atlas(out / "bands")
    singles = read_atlas(out / "singles")
    checks = {}
    for layer in CHECK_LAYERS:
        entry = next(e for e in atlas.entries if e.layers == str(layer))
        budget = atlas.budget
        measured = measured_numbers(read_item_rows(out / f"layer{layer}"), budget, n_boot=atlas.n_boot)
        checks[layer] = {m: {"atlas": getattr(entry, m).model_dump(), "sweep": dict(zip(("value", "low", "high"), measured[m]))}
                         for m in ("alignment_slope", "norm_at_budget", "alignment_gain_at_budget")}
    result = {"limit": opts.limit, "points": opts.points, "seconds": t, "load": load,
              "ratios": {"singles_over_sweep": t["atlas_singles"] / t["sweep_33"],
                         "bands_over_sweep": t["atlas_bands"] / t["sweep_33"],
                         "singles_over_extract_and_sweep": t["atlas_singles"] / (t["extract"] + t["sweep_33"]),
                         "bands_over_extract_and_sweep": t["atlas_bands"] / (t["extract"] + t["sweep_33"])},
              "block_rows": {"singles": singles.cost.block_rows_per_sequence, "bands": atlas.cost.block_rows_per_sequence,
                             "sweep_33_middle": None},
              "atlas_stage_seconds": {"singles": singles.cost.seconds, "bands": atlas.cost.seconds,
                                      "reading_singles": singles.cost.reading_seconds},
              "checks": checks, "best": atlas.best, "recommendation": atlas.recommendation,
              "correlation": atlas.correlation.model_dump()}
    (HERE / "atlas.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
