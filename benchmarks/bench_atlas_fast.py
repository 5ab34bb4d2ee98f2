"""The atlas' default plan against the exhaustive atlas, as whole processes in one script (so
the wall-time ratio shares the machine's state), with each process' peak RSS.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_atlas_fast [--reference-limit N] [--out runs/bench_atlas_fast]

1. ``atlas`` with its defaults (built-in harmfulness, ``basic-qa``);
2. ``atlas --exhaustive --confirm 0`` (every band, every item; ``--reference-limit N``: the first
   N items of each task) unless ``--reference DIR`` names one measured already;
3. how they agree: the reference's rank of the default's answer, whether both name the same best
   entry, the Spearman correlation of predicted gains over the entries both measured, and the
   overlap of their top five.

Writes ``benchmarks/atlas-fast.json`` and prints it.
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


def timed(args: list[str]) -> dict:
    """Wall seconds and peak RSS (GiB, from GNU time) of ``repe-tradeoff ARGS`` as a process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "repe_tradeoff", "-q", *args],
                          check=True, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_kib = int(proc.stderr.strip().splitlines()[-1])
    return {"seconds": seconds, "peak_rss_gib": peak_kib / 2**20, "load": os.getloadavg()}


def agreement(fast_dir: Path, reference_dir: Path) -> dict:
    from scipy.stats import spearmanr

    from repe_tradeoff.runfiles import read_atlas

    fast, ref = read_atlas(fast_dir), read_atlas(reference_dir)
    ref_rank = {e.layers: e.rank for e in ref.entries}
    gains = {e.layers: e.alignment_gain_at_budget.value for e in ref.entries}
    both = [e for e in fast.entries if e.alignment_gain_at_budget.value is not None
            and gains.get(e.layers) is not None]
    rho = spearmanr([e.alignment_gain_at_budget.value for e in both], [gains[e.layers] for e in both])
    top = lambda entries: {e.layers for e in entries if e.rank is not None and e.rank <= 5}  # noqa: E731
    return {"fast_best": fast.best, "fast_best_from": fast.best_from, "reference_best": ref.best,
            "same_best": fast.best == ref.best, "reference_rank_of_fast_best": ref_rank.get(fast.best),
            "fast_predicted_best": next((e.layers for e in fast.entries if e.rank == 1), None),
            "spearman_predicted_gain": float(rho.statistic), "entries_compared": len(both),
            "top5_overlap": len(top(fast.entries) & top(ref.entries)),
            "fast_items": fast.n_items, "reference_items": ref.n_items,
            "fast_entries": len(fast.entries), "reference_entries": len(ref.entries),
            "confirmations": [c.model_dump() for c in fast.confirmations],
            "fast_recommendation": fast.recommendation, "reference_recommendation": ref.recommendation}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench_atlas_fast"))
    parser.add_argument("--reference", type=Path, help="an exhaustive atlas folder measured already")
    parser.add_argument("--reference-limit", type=int, help="items per task of the exhaustive atlas")
    opts = parser.parse_args()
    result = {"fast": timed(["atlas", "--out", str(opts.out / "fast")])}
    reference = opts.reference
    if reference is None:
        reference = opts.out / "exhaustive"
        limit = ["--limit", str(opts.reference_limit)] if opts.reference_limit else []
        result["exhaustive"] = timed(["atlas", "--exhaustive", "--confirm", "0", *limit, "--out", str(reference)])
        result["wall_ratio_fast_over_exhaustive"] = result["fast"]["seconds"] / result["exhaustive"]["seconds"]
    result["agreement"] = agreement(opts.out / "fast", reference)
    (HERE / "atlas-fast.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
