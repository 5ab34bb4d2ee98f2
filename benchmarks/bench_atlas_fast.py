"""The atlas' default plan against the exhaustive atlas, as whole processes in one script (so
the wall-time ratio shares the machine's state), with each process' peak RSS.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_atlas_fast [--reference-limit N] [--out runs/bench_atlas_fast]
    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_atlas_fast --screen-from ATLAS --screen-items 8,16

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

    from repe_tradeoff.runs import read_atlas

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


def screen_from_probes(atlas_dir: Path, n_align: int, n_help: int, stride: int) -> dict:
    """Without a model: the default screen's ranking recomputed from a measured atlas' probes
    (its first ``n_align`` / ``n_help`` items, the entries of ``stride``) against that atlas'
    own ranking of all its entries and items."""
    from scipy.stats import spearmanr

    from repe_tradeoff.runs import read_atlas
    from repe_tradeoff.theory.decisions.layers import entry_numbers
    from repe_tradeoff.workflows.atlas import atlas_entries

    atlas = read_atlas(atlas_dir)
    rows = [json.loads(line) for line in (atlas_dir / "probes.jsonl").read_text().splitlines()]
    items = {kind: sorted({r["item"] for r in rows if r["kind"] == kind}) for kind in ("alignment", "helpfulness")}
    keep = {("alignment", i) for i in items["alignment"][:n_align]} | \
        {("helpfulness", i) for i in items["helpfulness"][:n_help]}
    layers = sorted({layer for e in atlas.entries for layer in range(e.first, e.last + 1)})
    chosen = {e.label for e in atlas_entries(layers, atlas.widths, atlas.probe_fraction, stride)}
    gains = {}
    for entry in atlas.entries:
        if entry.layers in chosen:
            recs = [r for r in rows if (r["kind"], r["item"]) in keep and r["layers"] in (None, entry.layers)]
            gains[entry.layers] = entry_numbers(recs, entry.probe_h, atlas.budget, n_boot=2)[
                "alignment_gain_at_budget"][0]
    full = {e.layers: e.alignment_gain_at_budget.value for e in atlas.entries}
    both = [k for k in gains if gains[k] is not None and full[k] is not None]
    screen_order = sorted(both, key=lambda k: -gains[k])
    full_rank = {e.layers: e.rank for e in atlas.entries}
    return {"items": {"alignment": n_align, "helpfulness": n_help}, "stride": stride,
            "entries": len(chosen), "full_best": atlas.best, "screen_top3": screen_order[:3],
            "full_ranks_of_screen_top3": [full_rank[k] for k in screen_order[:3]],
            "full_best_in_screen_top3": atlas.best in screen_order[:3],
            "spearman": float(spearmanr([gains[k] for k in both], [full[k] for k in both]).statistic)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench_atlas_fast"))
    parser.add_argument("--reference", type=Path, help="an exhaustive atlas folder measured already")
    parser.add_argument("--reference-limit", type=int, help="items per task of the exhaustive atlas")
    parser.add_argument("--screen-from", type=Path, help="only recompute the default screen from this exhaustive "
                        "atlas' probes (no model), for item counts ALIGN,HELP given by --screen-items")
    parser.add_argument("--screen-items", default="16,32")
    opts = parser.parse_args()
    if opts.screen_from:
        n_align, n_help = (int(x) for x in opts.screen_items.split(","))
        out = [screen_from_probes(opts.screen_from, n_align, n_help, stride) for stride in (1, 2)]
        print(json.dumps(out, indent=2))
        return
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
