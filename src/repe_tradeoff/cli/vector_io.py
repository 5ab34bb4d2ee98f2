"""The `export` command (and its older name `export-lm-eval`): a vector at norm r in another runtime's own format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from repe_tradeoff.cli.app import MODEL_HELP, app, load_lm, out_console


@app.command("export")
def export_cmd(
    vector: Path = typer.Option(..., "--vector", help="A vector file (any format `--vector` reads)."),
    norm: float = typer.Option(..., "--norm", "-r", help="The norm r to write r·v at."),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write."),
    fmt: str = typer.Option(..., "--format", "-f", help="llama.cpp (control-vector .gguf), lm-eval (.pt for its `steered` model) or safetensors (r·v in this library's format)"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    layer_spec: Optional[str] = typer.Option(None, "--layers", "-l", help="Default: the vector's layers."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Write r·v for llama.cpp (`llama-cli --control-vector`), lm-eval's `steered` model, or safetensors."""
    from repe_tradeoff.models.loading import n_layers, parse_layers
    from repe_tradeoff.vectors.export import FORMATS, export_vector
    from repe_tradeoff.vectors.vector import SteeringVector

    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    vec = SteeringVector.load(vector)
    lm = load_lm(model, "float32", None, trust_remote_code)
    vec.check_model(lm.model, str(vector))
    if layer_spec:
        vec = vec.select(parse_layers(layer_spec, n_layers(lm.model)))
    path = export_vector(vec, fmt, out, norm, lm.model)
    hint = {"llama.cpp": f" (llama-cli -m MODEL.gguf --control-vector {path})",
            "lm-eval": f" (lm_eval --model steered --model_args pretrained=MODEL,steer_path={path})",
            "safetensors": " (steer it at r = 1)"}[fmt]
    out_console.print(f"wrote {path}{hint}", highlight=False, soft_wrap=True)


@app.command("export-lm-eval", hidden=True)  # the older name, kept for scripts
def export_lm_eval(
    vector: Path = typer.Option(..., "--vector"),
    norm: float = typer.Option(..., "--norm", "-r"),
    out: Path = typer.Option(..., "--out", "-o", help="The .pt file for lm-eval's `steered` model."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
):
    """`export --format lm-eval`: a vector at norm r for lm-evaluation-harness's `steered` model."""
    export_cmd(vector=vector, norm=norm, out=out, fmt="lm-eval", model=model, layer_spec=None, trust_remote_code=False)
