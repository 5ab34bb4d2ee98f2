"""The commands that measure a model: layers, extract, generate, sweep, predict and atlas."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from repe_tradeoff.cli.app import (
    ARGV_ENV,
    MODEL_HELP,
    SweepProgress,
    app,
    command_line,
    load_lm,
    option_errors,
    out_console,
)


@app.command()
def layers(
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Show where a model's decoder blocks, final norm and unembedding are, and the layer numbering."""
    from repe_tradeoff.models.loading import (
        find_final_norm,
        layer_path,
        middle_layers,
        n_layers,
        unembedding,
    )

    lm = load_lm(model, "float32", None, trust_remote_code)
    n = n_layers(lm.model)
    out_console.print(f"blocks: {layer_path(lm.model)} ({n} layers, numbered 0-{n - 1}; layer i = output of block i)")
    out_console.print(f"final norm: {type(find_final_norm(lm.model)).__name__}; unembedding U: {tuple(unembedding(lm.model).shape)}")
    out_console.print(f"`middle` = {middle_layers(n)}")


@app.command("extract")
def extract_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the vector (.safetensors)."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    behavior: str = typer.Option("harmfulness", "--behavior", "-b", help="harmfulness, sentiment, a folder or a pairs file"),
    layer_spec: str = typer.Option("middle", "--layers", "-l", help="e.g. middle, 8-15, 8,10,12, -5"),
    method: str = typer.Option("pca", "--method", help="pca, mean or probe"),
    position: str = typer.Option("last", "--position", help="read at the last token or the mean over tokens"),
    batch_size: int = typer.Option(16, "--batch-size"),
    dtype: str = typer.Option("float32", "--dtype"),
    device: Optional[str] = typer.Option(None, "--device"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Read a behavior direction from contrastive pairs and save it as a steering vector."""
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.vectors.reading import extract

    if out.is_dir():
        raise typer.BadParameter(f"--out {out} is a folder; give the vector a file name, e.g. {out / 'vector.safetensors'}")
    data = load_behavior(behavior)
    if not data.pairs:
        raise typer.BadParameter(f"behavior {behavior!r} has no contrastive pairs to read a direction from")
    lm = load_lm(model, dtype, device, trust_remote_code)
    chosen = parse_layers(layer_spec, n_layers(lm.model))
    vector, report = extract(
        lm.model, lm.tokenizer, [(p.aligned, p.misaligned) for p in data.pairs], chosen, method=method,
        position=position, batch_size=batch_size,
        metadata={"model": model, "model_revision": lm.revision, "dataset": data.name},
    )
    vector.save(out)
    table = Table(title=f"{data.name}: {method} directions, separation on held-out pairs")
    for col in ("layer", "pairs separated", "projection gap", "effect size", "mean ‖h‖"):
        table.add_column(col, justify="right")
    for s in report:
        table.add_row(str(s.layer), f"{s.accuracy:.0%}", f"{s.gap:.2f}", f"{s.effect_size:.2f}", f"{s.residual_norm:.1f}")
    out_console.print(table)
    out_console.print(f"wrote {out}")


@app.command("generate")
def generate_cmd(
    prompt: str = typer.Argument(..., help="The user prompt."),
    vector: Path = typer.Option(..., "--vector", help="A vector written by `extract`."),
    norms: list[float] = typer.Option([0.0], "--norm", "-r", help="Repeat for several norms."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    layer_spec: Optional[str] = typer.Option(None, "--layers", "-l", help="Default: the vector's layers."),
    positions: str = typer.Option("all", "--positions"),
    operator: str = typer.Option("add", "--operator"),
    max_new_tokens: int = typer.Option(60, "--max-new-tokens"),
    dtype: str = typer.Option("float32", "--dtype"),
    device: Optional[str] = typer.Option(None, "--device"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Print greedy continuations of PROMPT steered at each norm, side by side."""
    from repe_tradeoff.engine.generation import generate
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.vectors.vector import SteeringVector

    vec = SteeringVector.load(vector)
    lm = load_lm(model, dtype, device, trust_remote_code)
    vec.check_model(lm.model, str(vector))
    chosen = parse_layers(layer_spec, n_layers(lm.model)) if layer_spec else vec.layers
    texts = generate(lm.model, lm.tokenizer, [prompt], vec, norms, layers=chosen, positions=positions,
                     operator=operator, max_new_tokens=max_new_tokens)[0]
    table = Table(title=prompt, show_lines=True)
    for r in norms:
        table.add_column(f"r = {r:g}", overflow="fold")
    table.add_row(*texts)
    out_console.print(table)


@app.command()
def sweep(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (created; resumed if it holds this sweep)."),
    vector: list[Path] = typer.Option(..., "--vector", help="A vector written by `extract`; give two or more to steer jointly over the product of their grids."),
    norms: list[str] = typer.Option(["-60:60:4"], "--norms", help="start:stop:step (stop included), a comma list, or auto (found from the model's response); once per --vector for a joint sweep (or once, shared)"),
    points: Optional[int] = typer.Option(None, "--points", min=5, help="With --norms auto: place N norms evenly in the curves' change (a dense grid) instead of the sequential plan."),
    max_loss: str = typer.Option("0.05", "--max-helpfulness-loss", help="With --norms auto (sequential): the loss of P(correct) whose norm the plan brackets; absolute, or e.g. 5% of r = 0's."),
    refine: int = typer.Option(0, "--refine", min=0, help="Add K norms to the run in --out where neighbouring points differ most."),
    orthogonalize: bool = typer.Option(False, "--orthogonalize", help="Joint sweep: make each vector after the first orthogonal to the first at every layer."),
    norm_unit: str = typer.Option("absolute", "--norm-unit", help="absolute, or residual (multiples of the mean ‖h‖ at the steered layers)"),
    alignment: list[str] = typer.Option([], "--alignment", "-a", help="Behavior(s) to score, e.g. harmfulness"),
    helpfulness: list[str] = typer.Option([], "--helpfulness", help="Task(s): basic-qa, mmlu:SUBJECT, lm-eval:TASK, short-answer, a file"),
    lm_eval_include: Optional[Path] = typer.Option(None, "--lm-eval-include", help="A folder of local lm-eval task YAMLs, for --helpfulness lm-eval:TASK."),
    fluency: list[str] = typer.Option([], "--fluency", help="Neutral text for the kl and perplexity metrics: neutral or a JSONL file"),
    fmt: str = typer.Option("cloze", "--format", help="Helpfulness format: cloze or letter"),
    scorer: str = typer.Option("forced-choice", "--scorer", help="forced-choice, yes-no or generate"),
    response_scorer: str = typer.Option("refusal", "--response-scorer", help="For --scorer generate: refusal, sentiment or module:function"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    layer_spec: Optional[str] = typer.Option(None, "--layers", "-l", help="Default: the vector's layers."),
    positions: str = typer.Option("all", "--positions"),
    operator: str = typer.Option("add", "--operator"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N items of each task."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows (sequence × norm) per forward pass [default: 256 on a CPU, 1024 on a GPU; halved on out-of-memory]."),
    chunk_size: int = typer.Option(16, "--chunk-size", help="Items per resumable chunk."),
    processes: int = typer.Option(1, "--processes", min=1, help="Data-parallel processes (through `accelerate launch`)."),
    no_share: bool = typer.Option(False, "--no-share", help="Recompute shared prompts and the layers below the first steered one for every sequence and norm."),
    dtype: str = typer.Option("float32", "--dtype"),
    device: Optional[str] = typer.Option(None, "--device"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Measure alignment and helpfulness at every norm of a grid; writes points.jsonl and items.jsonl."""
    from pydantic import ValidationError

    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.runs.processes import process_group
    from repe_tradeoff.vectors.vector import SteeringVector, vector_name
    from repe_tradeoff.workflows.prepare import build_tasks, prepare_joint_sweep, prepare_sweep
    from repe_tradeoff.workflows.settings import BehaviorSpec, SweepSettings
    from repe_tradeoff.workflows.sweep import run_sweep

    if not alignment and not helpfulness and not fluency:
        raise typer.BadParameter("nothing to measure: give --alignment BEHAVIOR, --helpfulness TASK and/or --fluency neutral")
    if lm_eval_include is not None and not any(h.startswith("lm-eval:") for h in helpfulness):
        raise typer.BadParameter("--lm-eval-include names a folder of lm-eval tasks: use it with --helpfulness lm-eval:TASK")
    if processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise typer.Exit(_relaunch(processes, device))
    if len(norms) not in (1, len(vector)):
        raise typer.BadParameter(f"{len(norms)} --norms for {len(vector)} --vector: give --norms once (shared) "
                                 "or once per --vector, in the same order")
    if orthogonalize and len(vector) < 2:
        raise typer.BadParameter("--orthogonalize needs two or more --vector")
    if len(vector) > 1 and (refine or any(n.strip() == "auto" for n in norms)):
        raise typer.BadParameter("a joint sweep takes explicit grids: give --norms GRID per --vector "
                                 "(--norms auto and --refine are for one vector)")
    try:
        settings = SweepSettings(
            dtype=dtype, norms=norms[0], points=points, norm_unit=norm_unit, orthogonalize=orthogonalize,
            joint_norms=norms if len(vector) > 1 and len(norms) > 1 else [], positions=positions, operator=operator, limit=limit,
            batch_size=batch_size, chunk_size=chunk_size, share_lower=not no_share, share_prompts=not no_share,
            response_scorer=response_scorer, behaviors=[BehaviorSpec(name=a, scorer=scorer) for a in alignment],
            helpfulness=[_helpfulness_spec(h, fmt, lm_eval_include) for h in helpfulness], fluency=fluency)
    except ValidationError as err:
        raise typer.BadParameter(option_errors(err)) from None
    from repe_tradeoff.theory.decisions.budget import parse_budget
    from repe_tradeoff.theory.errors import TheoryError

    try:
        parse_budget(max_loss)  # a budget that cannot be read fails before the model loads
    except TheoryError as err:
        raise typer.BadParameter(f"--max-helpfulness-loss: {err}") from None
    vecs = [SteeringVector.load(path) for path in vector]
    tasks = build_tasks(settings)  # a dataset that cannot be read fails before the model loads
    lm = load_lm(model, dtype, device, trust_remote_code)
    for vec, path in zip(vecs, vector):
        vec.check_model(lm.model, str(path))
    chosen = parse_layers(layer_spec, n_layers(lm.model)) if layer_spec else vecs[0].layers
    for vec in vecs:
        vec.select(chosen)  # a layer a vector lacks fails here, before the run folder is made
    if len(vecs) == 1:
        plan, config = prepare_sweep(lm, settings, vecs[0], chosen, model_name=model, command=command_line(),
                                     extra={"vector_path": str(vector[0])}, tasks=tasks, out=out, refine=refine,
                                     budget=max_loss, progress=SweepProgress())
    else:
        names = [vector_name(vec, path) for vec, path in zip(vecs, vector)]
        plan, config, vecs = prepare_joint_sweep(lm, settings, vecs, names, chosen, model_name=model,
                                                 command=command_line(), tasks=tasks,
                                                 extra={"vector_paths": [str(p) for p in vector]})
    run_sweep(lm.model, lm.tokenizer, vecs[0] if len(vecs) == 1 else vecs, plan, out, config=config, limit=limit,
              progress=SweepProgress())
    if process_group()[1] == 0:
        out_console.print(f"wrote {out / 'points.jsonl'} and {out / 'items.jsonl'}")


def _helpfulness_spec(spec: str, fmt: str, lm_eval_include: Path | None):
    """A --helpfulness option as a spec; --lm-eval-include goes to its lm-eval tasks."""
    from repe_tradeoff.workflows.settings import LM_EVAL_PREFIX, HelpfulnessSpec

    if not spec.startswith(LM_EVAL_PREFIX):
        return HelpfulnessSpec(spec=spec, format=fmt)
    return HelpfulnessSpec(lm_eval=spec[len(LM_EVAL_PREFIX):], format=fmt,
                           include=str(lm_eval_include) if lm_eval_include else None)


@app.command()
def predict(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder for the probe sweep and the prediction."),
    vector: Path = typer.Option(..., "--vector", help="A vector written by `extract`."),
    norms: str = typer.Option(..., "--norms", help="The grid to predict: start:stop:step or a comma list"),
    norm_unit: str = typer.Option("absolute", "--norm-unit", help="absolute, or residual (multiples of the mean ‖h‖ at the steered layers)"),
    probe: Optional[float] = typer.Option(None, "--probe", help="Probe size h, in the grid's unit [default: 0.0125 × the steered layers' mean residual norm]."),
    alignment: list[str] = typer.Option([], "--alignment", "-a", help="Behavior(s) to score, e.g. harmfulness"),
    helpfulness: list[str] = typer.Option([], "--helpfulness", help="Task(s): basic-qa, mmlu:SUBJECT, a file"),
    fmt: str = typer.Option("cloze", "--format", help="Helpfulness format: cloze or letter"),
    scorer: str = typer.Option("forced-choice", "--scorer", help="forced-choice or yes-no (the response needs logit gaps)"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    layer_spec: Optional[str] = typer.Option(None, "--layers", "-l", help="Default: the vector's layers."),
    positions: str = typer.Option("all", "--positions"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N items of each task."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows (sequence × norm) per forward pass."),
    n_boot: int = typer.Option(200, "--n-boot", min=0, help="Bootstrap replicates over items for the bands."),
    dtype: str = typer.Option("float32", "--dtype"),
    device: Optional[str] = typer.Option(None, "--device"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Measure only the probe norms 0, ±h, ±2h and predict alignment and helpfulness over the grid."""
    from pydantic import ValidationError

    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.vectors.vector import SteeringVector
    from repe_tradeoff.workflows.predict import probe_plan, run_predict
    from repe_tradeoff.workflows.prepare import build_tasks
    from repe_tradeoff.workflows.settings import BehaviorSpec, HelpfulnessSpec, SweepSettings

    if not alignment and not helpfulness:
        raise typer.BadParameter("nothing to predict: give --alignment BEHAVIOR and/or --helpfulness TASK")
    if scorer == "generate":
        raise typer.BadParameter("--scorer generate records no logit gap, so alignment cannot be "
                                 "expanded in r: use forced-choice or yes-no")
    try:
        settings = SweepSettings(
            dtype=dtype, norms=norms, norm_unit=norm_unit, positions=positions, limit=limit,
            batch_size=batch_size, behaviors=[BehaviorSpec(name=a, scorer=scorer) for a in alignment],
            helpfulness=[HelpfulnessSpec(spec=h, format=fmt) for h in helpfulness])
    except ValidationError as err:
        raise typer.BadParameter(option_errors(err)) from None
    vec = SteeringVector.load(vector)
    if not layer_spec:  # a grid without room for the probe fails before the model loads
        probe_plan(settings, vec, vec.layers, probe)
    tasks = build_tasks(settings)
    lm = load_lm(model, dtype, device, trust_remote_code)
    vec.check_model(lm.model, str(vector))
    chosen = parse_layers(layer_spec, n_layers(lm.model)) if layer_spec else vec.layers
    vec.select(chosen)
    summary = run_predict(lm, settings, vec, chosen, out, probe=probe, model_name=model,
                          command=command_line(), extra={"vector_path": str(vector)}, tasks=tasks,
                          n_boot=n_boot, progress=SweepProgress("probe"))
    out_console.print(f"wrote {out / 'predicted.jsonl'}, {out / 'response.json'} and {summary}")


@app.command()
def atlas(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for atlas.json, atlas.csv, the plots and atlas.html."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    behavior: str = typer.Option("harmfulness", "--behavior", "-b", help="Pairs to read directions from, and items to score"),
    helpfulness: str = typer.Option("basic-qa", "--helpfulness", help="The helpfulness task: basic-qa, mmlu:SUBJECT, a file"),
    layer_spec: str = typer.Option("all", "--layers", "-l", help="Layers to measure, e.g. all, 4-25"),
    bands: str = typer.Option("1,4,8", "--bands", help="Band widths: 1 = single layers, 4 = every 4 contiguous layers, …"),
    band_stride: int = typer.Option(2, "--band-stride", min=1,
                                    help="Bands wider than 1 start every N layers (and the topmost); 1: every band."),
    budget: float = typer.Option(0.05, "--budget", help="The loss of P(correct) at which each entry's gain is read."),
    probe_items: str = typer.Option("16,32", "--probe-items",
                                    help="Items probed per entry: ALIGNMENT,HELPFULNESS (or one number, or all)."),
    confirm: int = typer.Option(3, "--confirm", min=0, help="Sweep the K best entries; the answer rests on them (0: none)."),
    confirm_items: str = typer.Option("32", "--confirm-items", help="Items per task of each confirming sweep (or all)."),
    confirm_plan: str = typer.Option("bracket", "--confirm-plan",
                                     help="bracket: 0, ±h and 5 norms around the predicted norm at the budget; "
                                          "auto: the automatic grid."),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="Every band, every item, confirmations on the "
                                    "automatic grid (overrides --band-stride, --probe-items, --confirm-*)."),
    method: str = typer.Option("pca", "--method", help="pca, mean or probe"),
    scorer: str = typer.Option("forced-choice", "--scorer", help="forced-choice or yes-no"),
    fmt: str = typer.Option("cloze", "--format", help="Helpfulness format: cloze or letter"),
    probe: float = typer.Option(0.0125, "--probe", help="Probe size h, a fraction of each steered layer's residual norm."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N items of each task (probe and confirmation)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows (sequence × probe point) per forward pass."),
    n_boot: int = typer.Option(200, "--n-boot", min=1, help="Bootstrap replicates over items for the intervals."),
    dtype: str = typer.Option("float32", "--dtype"),
    device: Optional[str] = typer.Option(None, "--device"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Probe every layer and band of layers at once: which layers to steer, and does separation predict the cost?

    By default a screen on a few items, then sweeps of the best entries (docs/atlas.md)."""
    from pydantic import ValidationError

    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.workflows.atlas import parse_widths, run_atlas
    from repe_tradeoff.workflows.atlas_plan import AtlasPlan, parse_items, parse_probe_items
    from repe_tradeoff.workflows.atlas_plan import exhaustive as exhaustive_plan
    from repe_tradeoff.workflows.prepare import build_tasks
    from repe_tradeoff.workflows.settings import BehaviorSpec, HelpfulnessSpec, SweepSettings

    if not 0 < budget < 1:
        from repe_tradeoff.workflows.atlas import AtlasError

        raise AtlasError(f"--budget {budget}: a loss of P(correct) lies between 0 and 1; give e.g. 0.05")
    if scorer not in ("forced-choice", "yes-no"):
        raise typer.BadParameter(f"--scorer {scorer!r}: the atlas reads logit gaps, so use forced-choice or yes-no")
    if not probe > 0:
        raise typer.BadParameter(f"--probe {probe:g}: give a positive fraction of the residual norm, e.g. 0.0125")
    parse_widths(bands, 10**6)  # a malformed --bands fails before the model loads
    # a bad item count or plan name is an AtlasPlanError: one message, exit 1, before the model loads
    plan = exhaustive_plan(confirm) if exhaustive else AtlasPlan(
        band_stride=band_stride, probe_items=parse_probe_items(probe_items), confirm=confirm,
        confirm_items=parse_items(confirm_items, "--confirm-items"), confirm_plan=confirm_plan)
    try:
        settings = SweepSettings(dtype=dtype, norms="0", limit=limit, batch_size=batch_size,
                                 behaviors=[BehaviorSpec(name=behavior, scorer=scorer)],
                                 helpfulness=[HelpfulnessSpec(spec=helpfulness, format=fmt)])
    except ValidationError as err:
        raise typer.BadParameter(option_errors(err)) from None
    data = load_behavior(behavior)
    if not data.pairs:
        raise typer.BadParameter(f"behavior {behavior!r} has no contrastive pairs to read directions from")
    tasks = build_tasks(settings)
    lm = load_lm(model, dtype, device, trust_remote_code)
    chosen = parse_layers(layer_spec, n_layers(lm.model))
    path = run_atlas(lm, settings, [(p.aligned, p.misaligned) for p in data.pairs], out, layers=chosen,
                     widths=parse_widths(bands, len(chosen)), budget=budget, method=method, probe_fraction=probe,
                     n_boot=n_boot, tasks=tasks, model_name=model, behavior=data.name, plan=plan,
                     command=command_line(), progress=SweepProgress("atlas"), sweep_progress=SweepProgress("confirm"))
    from repe_tradeoff.runs import read_atlas

    out_console.print(read_atlas(path).recommendation)
    out_console.print(f"wrote {path / 'atlas.json'}, {path / 'atlas.csv'} and {path / 'atlas.html'}")


def _relaunch(processes: int, device: str | None) -> int:
    """Run this same command under `accelerate launch` with N processes; return its exit code."""
    import subprocess

    args, skip = [], False
    for arg in sys.argv[1:]:  # drop --processes N / --processes=N
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            args.append(arg)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if device in (None, "cpu"):
        launch.append("--cpu")
    env = {**os.environ, ARGV_ENV: json.dumps(sys.argv[1:])}  # the command config.json records
    return subprocess.call([*launch, "-m", "repe_tradeoff", *args], env=env)
