"""The `finetune` command: a LoRA on the behavior's pairs, its checkpoints on the sweep's axes."""

from __future__ import annotations

from pathlib import Path

import typer

from repe_tradeoff.cli.app import (
    MODEL_HELP,
    SweepProgress,
    app,
    command_line,
    load_lm,
    option_errors,
    out_console,
)


@app.command()
def finetune(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (created; resumed if it holds this run)."),
    behavior: str = typer.Option("harmfulness", "--behavior", "-b", help="The behavior whose pairs train the LoRA."),
    alignment: list[str] = typer.Option([], "--alignment", "-a", help="Behavior(s) to score [default: --behavior]."),
    helpfulness: list[str] = typer.Option(["basic-qa"], "--helpfulness", help="Task(s): basic-qa, mmlu:SUBJECT, a file, …"),
    fluency: list[str] = typer.Option([], "--fluency", help="Neutral text for kl and perplexity: neutral or a JSONL file"),
    fmt: str = typer.Option("cloze", "--format", help="Helpfulness format: cloze or letter"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    layer_spec: str | None = typer.Option(None, "--layers", "-l", help="Blocks LoRA adapts and the shift is measured at [default: the vector's, else middle]."),
    vector: Path | None = typer.Option(None, "--vector", help="A vector `extract` read from the same pairs (else one is read)."),
    steps: int = typer.Option(32, "--steps", min=1, help="Training steps."),
    checkpoints: int = typer.Option(9, "--checkpoints", min=2, help="Checkpoints, step 0 included, log-spaced."),
    method: str = typer.Option("lora", "--method", help="lora (the only method so far)"),
    rank: int = typer.Option(8, "--rank", min=1, help="LoRA rank."),
    alpha: float = typer.Option(16.0, "--alpha", help="LoRA alpha (the update is scaled by alpha / rank)."),
    targets: str = typer.Option("", "--target-modules", help="Comma list of linear-layer names [default: all linear layers of the blocks]."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    beta: float = typer.Option(0.1, "--beta", help="DPO temperature β."),
    batch_pairs: int = typer.Option(4, "--batch-pairs", min=1, help="Pairs per step."),
    seed: int = typer.Option(0, "--seed"),
    limit: int | None = typer.Option(None, "--limit", help="Score the first N items of each task."),
    dtype: str = typer.Option("float32", "--dtype"),
    device: str | None = typer.Option(None, "--device"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Train a LoRA on the behavior's pairs (DPO, aligned ≻ misaligned) and score each checkpoint
    with the sweep's tasks, measuring its representation shift; writes points.jsonl and shift.jsonl."""
    from pydantic import ValidationError

    from repe_tradeoff.engine.lora import LoraSettings
    from repe_tradeoff.workflows.finetune_setup import finetune_model
    from repe_tradeoff.workflows.settings import BehaviorSpec, SweepSettings

    if method != "lora":
        raise typer.BadParameter(f"--method {method!r}: only lora is implemented")
    try:
        settings = SweepSettings(dtype=dtype, limit=limit, norms="0", norm_unit="absolute",
                                 behaviors=[BehaviorSpec(name=a) for a in (alignment or [behavior])],
                                 helpfulness=[{"spec": h, "format": fmt} for h in helpfulness], fluency=fluency)
    except ValidationError as err:
        raise typer.BadParameter(option_errors(err)) from None
    lora = LoraSettings(steps=steps, checkpoints=checkpoints, rank=rank, alpha=alpha, learning_rate=lr, beta=beta,
                        batch_pairs=batch_pairs, seed=seed,
                        target_modules=tuple(t.strip() for t in targets.split(",") if t.strip()))
    lm = load_lm(model, dtype, device, trust_remote_code)
    done = finetune_model(lm, settings, behavior, layer_spec, lora, out, model_name=model, command=command_line(),
                          progress=SweepProgress("finetune"), vector_path=vector)
    out_console.print(f"trained {done['trained_steps']} step(s), scored {len(done['scored'])} checkpoint(s); "
                      f"wrote {out / 'points.jsonl'} and {out / 'shift.jsonl'}")


def is_finetune_run(run: Path) -> bool:
    """Whether ``run``'s config.json records a fine-tuning run."""
    import json

    path = Path(run) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == "finetune"
    except (OSError, ValueError, AttributeError):
        return False


def _g(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def fit_finetune_cmd(run: Path, n_boot: int, window: float | None = None) -> None:
    """`fit F` of a fine-tuning run: the laws against shift_norm and A1/A3; writes finetune_fits.json."""
    from repe_tradeoff.theory.laws.finetune import FITS_FILE, fit_finetune

    fits = fit_finetune(run, n_boot=n_boot, window=window)
    a, h = fits["alignment"], fits["helpfulness"]
    out_console.print(f"alignment ≈ {_g(a['intercept'])} + {_g(a['slope'])}·shift_norm (R² {_g(a['r2'])}); "
                      f"helpfulness ≈ {_g(h['p0'])} − {_g(h['quadratic_coefficient'])}·shift_norm² "
                      f"(R² {_g(h['r2'])}); A1 {fits['a1'].get('status')}, A3 {fits['a3'].get('status')}",
                      highlight=False)
    out_console.print(f"wrote {run / FITS_FILE}", highlight=False)


def report_finetune_cmd(run: Path, against: Path | None) -> None:
    """`report F [--against RUN]`: the fine-tuning report, with the steering comparison when given."""
    from repe_tradeoff.engine.lora import FinetuneError
    from repe_tradeoff.reporting.finetune import build_finetune_report
    from repe_tradeoff.theory.laws.finetune import read_finetune

    if not is_finetune_run(run):
        raise FinetuneError(f"--against compares a fine-tuning run with a steering run, and {run} is not a "
                                 "fine-tuning run: give the folder `repe-tradeoff finetune --out` wrote")
    read_finetune(run)  # a run that is not finished says so before anything is written
    out = build_finetune_report(run, against)
    md = run / "finetune.md"
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("At the largest"):
            out_console.print(line, highlight=False, soft_wrap=True)
    out_console.print(f"wrote {out}", highlight=False)
