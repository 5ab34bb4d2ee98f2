"""The command-line application, its consoles and shared options, and the progress display."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure, explain and predict what steering a language model costs.",
)


console = Console(stderr=True, soft_wrap=True)  # a message stays one line, whatever the width


out_console = Console()


STATE = {"debug": False, "quiet": False}


BUDGET_HELP = ("The recommendation's budget: the most P(correct) to lose, absolute (0.05) "
               "or relative to the unsteered value (5%).")


BASELINE_HELP = ("The prompting baseline's instruction, written before each task's text "
                 "[default: the behavior's own]; `none` to skip it.")


MODEL_HELP = "`default` (embedded SmolLM2-135M-Instruct), a Hugging Face id, a local folder, or a .gguf file"


class PointsRate(ProgressColumn):
    """Points per second, once rich has measured it."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "", style="progress.data.speed")


class SweepProgress:
    """A rich progress bar for the sweep: points done, rate, time left."""

    def __init__(self, label: str = "sweep"):
        self.label, self.bar, self.task = label, None, None

    def start(self, total: int, done: int) -> None:
        if STATE["quiet"]:
            return
        self.bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("points"), PointsRate(), TimeRemainingColumn(),
                            console=console)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total, completed=done)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)
            if self.bar.tasks[0].finished:
                self.bar.stop()


@app.callback()
def main_options(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results and errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every step."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
):
    STATE.update(debug=debug, quiet=quiet)
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("transformers", "accelerate", "urllib3", "filelock", "matplotlib", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if quiet:
        import transformers

        transformers.utils.logging.disable_progress_bar()


def load_lm(model: str, dtype: str, device: Optional[str], trust_remote_code: bool):
    from repe_tradeoff.models.loading import load_model

    return load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)


ARGV_ENV = "REPE_TRADEOFF_ARGV"


def command_line() -> str:
    """The command that ran, as one shell line (under --processes, the one given before relaunching)."""
    import shlex

    recorded = os.environ.get(ARGV_ENV)
    args = json.loads(recorded) if recorded else sys.argv[1:]
    return shlex.join(["repe-tradeoff", *args])


def option_errors(err) -> str:
    """A validation error of the sweep's options as one line naming each option and its value."""
    option = {"name": "alignment", "spec": "helpfulness"}
    parts = []
    for e in err.errors():
        msg = str(e["msg"]).removeprefix("Value error, ")
        keys = [str(p) for p in e["loc"] if not isinstance(p, int)]
        if keys:
            name = option.get(keys[-1], keys[-1]).replace("_", "-")
            msg = f"--{name} {e.get('input')!r}: {msg}"
        parts.append(msg)
    return "; ".join(parts)


def print_answer(run_dir: Path, verb: str, path: Path) -> None:
    """The recommendation (budgeted, conservative, λ rule; prompting baseline), then the path."""
    from repe_tradeoff.report.answer import answer_lines

    for line in answer_lines(run_dir):
        out_console.print(line, highlight=False, soft_wrap=True)
    out_console.print(f"{verb} {path}", highlight=False, soft_wrap=True)
