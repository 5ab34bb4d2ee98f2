"""The numbers of benchmarks/RESULTS-finetune.md, read from a fine-tuning run and a steering run.

    python -m benchmarks.finetune_numbers runs/ft runs/steer

Fits the fine-tuning run (``finetune_fits.json``), compares it with the steering run
(``finetune_comparison.json``, through ``report --against``) and prints the tables as Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from repe_tradeoff.reporting.finetune import build_finetune_report
from repe_tradeoff.runs import read_points
from repe_tradeoff.theory.laws.finetune import fit_finetune


def _ci(ci) -> str:
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "—"


def main(ft: Path, steer: Path) -> None:
    fits = fit_finetune(ft)
    build_finetune_report(ft, steer)
    comparison = json.loads((ft / "finetune_comparison.json").read_text())
    curves, _ = read_points(ft / "points.jsonl", [])
    align = curves[(fits["alignment"]["task"], "alignment")]
    helpful = curves[(fits["helpfulness"]["task"], "helpfulness")]
    print("| step | shift_norm | shift_along | shift_rest | shift_relative | ‖U·δ‖ | E[B] | P(correct) | train s | score s | score CPU s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in fits["checkpoints"]:
        s = c["shift_norm"]
        print(f"| {c['step']} | {s:.4g} | {c['shift_along']:.4g} | {c['shift_rest']:.4g} | {c['shift_relative']:.4g} "
              f"| {c['logit_shift']:.4g} | {align.at(round(s, 9)):.4f} | {helpful.at(round(s, 9)):.4f} "
              f"| {c['train_seconds']:.1f} | {c['score_seconds']:.1f} | {c['score_cpu_seconds']:.1f} |")
    a, h, a1, a3 = fits["alignment"], fits["helpfulness"], fits["a1"], fits["a3"]
    print()
    print(f"alignment linear: slope {a['slope']:.4g} {_ci(a['slope_ci'])}, intercept {a['intercept']:.4g}, R² {a['r2']:.3f}")
    print(f"helpfulness p0 − c·s²: c {h['quadratic_coefficient']:.4g} {_ci(h['quadratic_coefficient_ci'])}, "
          f"p0 {h['p0']:.4g}, R² {h['r2']:.3f}")
    print(f"A1: {a1.get('status')} r2 {a1.get('r2')} slope {a1.get('slope')} saturates_at {a1.get('saturates_at')} "
          f"initial_slope {a1.get('initial_slope')}")
    print(f"A3: {a3.get('status')} sigma {a3.get('sigma')} {_ci(a3.get('sigma_ci'))} qq {a3.get('qq_corr_median')} "
          f"mean/std {a3.get('mean_over_std_median')} fit_r2 {a3.get('sigma_fit_r2')}")
    print(f"along fraction: {fits['along_fraction']}")
    f, s = comparison["finetune"], comparison["steering"]
    print(f"common gain {comparison['gain']:.4g}; finetune max gain {f['max_gain']:.4g}, steering max gain {s['max_gain']:.4g}")
    print(f"loss at gain: finetune {f['loss']:.4g} {_ci(f['loss_ci'])} (not reaching {f['replicates_not_reaching']}), "
          f"steering {s['loss']:.4g} {_ci(s['loss_ci'])} (not reaching {s['replicates_not_reaching']})")
    print(f"difference {comparison['difference']:.4g} {_ci(comparison['difference_ci'])}: cheaper {comparison['cheaper']}")
    for c in comparison["at_smaller_gains"]:
        print(f"at gain {c['gain']:.4g}: finetune {c['finetune']:.4g} {_ci(c['finetune_ci'])} "
              f"(not reaching {c['finetune_not_reaching']}), steering {c['steering']:.4g} {_ci(c['steering_ci'])} "
              f"(not reaching {c['steering_not_reaching']}); difference {c['difference']:.4g} "
              f"{_ci(c['difference_ci'])}: cheaper {c['cheaper']}")
    print("steering curve:", [(round(p["norm"], 3), round(p["gain"], 4), round(p["loss"], 4)) for p in s["curve"]])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
