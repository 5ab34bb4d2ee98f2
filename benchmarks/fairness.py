"""The fairness direction and several behaviors at once, on the embedded model.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.fairness direction [--before-rev REV] [--limit N]
    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.fairness several [--limit 32] [--questions 16]

``direction``: a pca vector on ``middle`` read from the fairness pairs of git revision REV (the
"before" pairs) and from the built-in pairs of this tree, each swept over 5 norms in residual
units on the fairness items; the slope dB/dr at r = 0 per unit of relative norm with its 95 %
bootstrap CI (fits.json's ``off_target``), and E[B] at r = 0.

``several``: harmfulness, fairness and sentiment vectors, each swept over the same 5 norms
scoring all three behaviors (the off-target slope matrix), and a 9 × 9 joint grid of the
harmfulness and fairness vectors on basic-qa with and without ``--orthogonalize`` (the cross
term c12 of the helpfulness surface, with its CI, and cos(v_A, v_B) per layer).

Every step is a whole ``python -m repe_tradeoff`` process (sweeps resume in ``--work``); results go to
``benchmarks/fairness.json`` (one key per stage) and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import load_average

HERE = Path(__file__).resolve().parent
PAIRS = "src/repe_tradeoff/data/builtin/fairness_pairs.jsonl"
NORMS = "-0.1,-0.05,0,0.05,0.1"  # residual units: 5 norms, the slope window
JOINT_NORMS = "-0.1:0.1:0.025"  # 9 norms per vector
BEHAVIORS = ("harmfulness", "fairness", "sentiment")


MODEL = ["--model", "default"]  # set by --model; passed to extract and sweep
LAYERS = ["middle"]  # set by --layers


def _cli(*args: str) -> float:
    t0 = time.perf_counter()
    if args[0] in ("extract", "sweep"):
        args = (args[0], *MODEL, *args[1:])
    subprocess.run([sys.executable, "-m", "repe_tradeoff", "-q", *args], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _fits(run: Path) -> dict:
    _cli("fit", str(run))
    return json.loads((run / "fits.json").read_text())


def _scale(run: Path) -> float:
    """‖h‖, the residual unit of a one-vector run."""
    return float(json.loads((run / "config.json").read_text())["norm_unit_scale"])


def _slopes(run: Path, fits: dict) -> dict:
    """Per vector and behavior: the slope at r = 0 per unit of relative norm, with its CI."""
    scale = _scale(run)
    out = {}
    for row in fits["off_target"]:
        out[row["vector"]] = {
            task: {"slope": s["value"] * scale, "ci": [c * scale for c in s.get("ci") or []]}
            for task, s in row["slopes"].items() if s.get("value") is not None}
    return out


def _unsteered(run: Path, task: str) -> dict:
    for line in (run / "points.jsonl").read_text().splitlines():
        p = json.loads(line)
        if p["task"] == task and p["metric"] == "alignment" and p.get("norm") == 0.0:
            return {"mean": p["mean"], "se": p.get("stderr"), "n": p.get("n")}
    return {}


def direction(work: Path, rev: str, limit: int | None) -> dict:
    before = work / "fairness-before"
    before.mkdir()
    text = subprocess.run(["git", "show", f"{rev}:{PAIRS}"], check=True, capture_output=True, text=True,
                          cwd=HERE.parent).stdout
    (before / "pairs.jsonl").write_text(text)
    out = {"rev": rev, "norms_residual": NORMS, "limit": limit}
    for label, spec in (("before", str(before)), ("after", "fairness")):
        vec = work / f"{label}.safetensors"
        t_extract = _cli("extract", "--behavior", spec, "--layers", LAYERS[0], "--method", "pca", "--out", str(vec))
        run = work / f"run-{label}"
        sweep = ["sweep", "--vector", str(vec), "--norm-unit", "residual", f"--norms={NORMS}",
                 "--alignment", "fairness", "--out", str(run)]
        t_sweep = _cli(*sweep, *(["--limit", str(limit)] if limit else []))
        fits = _fits(run)
        slope = next(iter(_slopes(run, fits).values()))["fairness"]
        out[label] = {**slope, "unsteered": _unsteered(run, "fairness"),
                      "separation": _separation(vec),
                      "seconds": {"extract": round(t_extract, 1), "sweep": round(t_sweep, 1)}}
        print(label, json.dumps(out[label]))
    return out


def _separation(path: Path) -> dict:
    """Held-out pair separation per layer, as `extract` recorded it in the vector's metadata."""
    from repe_tradeoff.vectors.vector import SteeringVector

    return SteeringVector.load(path).metadata.get("separation", {})


def several(work: Path, limit: int, questions: int) -> dict:
    vectors = {}
    for b in BEHAVIORS:
        vectors[b] = work / f"{b}.safetensors"
        if not vectors[b].exists():  # a resumed --work folder keeps its vectors
            _cli("extract", "--behavior", b, "--layers", LAYERS[0], "--method", "pca", "--out", str(vectors[b]))
    matrix, seconds = {}, {}
    scored = [a for b in BEHAVIORS for a in ("--alignment", b)]
    for b, vec in vectors.items():
        run = work / f"off-{b}"
        seconds[f"off-{b}"] = round(_cli("sweep", "--vector", str(vec), "--norm-unit", "residual", f"--norms={NORMS}",
                                         *scored, "--limit", str(limit), "--out", str(run)), 1)
        matrix.update(_slopes(run, _fits(run)))
        print("off-target", b, json.dumps(matrix[b]))
    joint = {}
    for label, extra in (("plain", []), ("orthogonalized", ["--orthogonalize"])):
        run = work / f"joint-{label}"
        seconds[f"joint-{label}"] = round(_cli(
            "sweep", "--vector", str(vectors["harmfulness"]), "--vector", str(vectors["fairness"]),
            "--norm-unit", "residual", f"--norms={JOINT_NORMS}", f"--norms={JOINT_NORMS}",
            "--helpfulness", "basic-qa", "--limit", str(questions), "--out", str(run), *extra), 1)
        fits = _fits(run)
        surface = fits["joint"]["surfaces"]["basic-qa"]
        config = json.loads((run / "config.json").read_text())
        # each vector's r in its own relative unit: a term r1^i r2^j scales by s1^i s2^j
        s1, s2 = (float(config["norm_unit_scales"][n]) for n in ("harmfulness", "fairness"))
        unit = {"h0": 1.0, "b1": s1, "b2": s2, "c1": s1 * s1, "c2": s2 * s2, "c12": s1 * s2}
        joint[label] = {
            "scales": [s1, s2],
            "params_relative": {t: v * unit[t] for t, v in (surface["params"] or {}).items()},
            "ci_relative": {t: [c * unit[t] for c in ci] for t, ci in (surface.get("ci") or {}).items()},
            "n_points": surface.get("n_points"), "r2": surface.get("r2"), "window": surface.get("window"),
            "cosines_before": config.get("cosines_before"), "cosines": config.get("cosines"),
            "prediction": fits["joint"].get("predictions", {}).get("basic-qa"),
        }
        print("joint", label, json.dumps({k: joint[label][k] for k in ("params_relative", "ci_relative")}))
    return {"limit": limit, "questions": questions, "norms_residual": NORMS, "joint_norms_residual": JOINT_NORMS,
            "off_target": matrix, "joint": joint, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["direction", "several"])
    ap.add_argument("--before-rev", default="3baf8d1", help="the revision whose fairness pairs are 'before'")
    ap.add_argument("--limit", type=int, default=None, help="items per behavior (direction: all; several: 32)")
    ap.add_argument("--questions", type=int, default=16, help="basic-qa questions of the joint grid")
    ap.add_argument("--model", default="default", help="another model, e.g. a tiny one to check the script")
    ap.add_argument("--layers", default="middle")
    ap.add_argument("--work", type=Path, default=None,
                    help="several: a folder to resume (its vectors kept, its sweeps resumed); default a new one")
    args = ap.parse_args()
    MODEL[:] = ["--model", args.model]
    LAYERS[:] = [args.layers]
    work = args.work or Path(tempfile.mkdtemp(prefix=f"bench-fairness-{args.stage}-"))
    work.mkdir(parents=True, exist_ok=True)
    load_start = load_average()
    if args.stage == "direction":
        result = direction(work, args.before_rev, args.limit)
    else:
        result = several(work, args.limit or 32, args.questions)
    result["load_average"] = [load_start, load_average()]
    path = HERE / "fairness.json" if args.model == "default" else work / "fairness.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[args.stage] = result
    path.write_text(json.dumps(stored, indent=2) + "\n")
    print(f"wrote {path} ({work})")


if __name__ == "__main__":
    main()
