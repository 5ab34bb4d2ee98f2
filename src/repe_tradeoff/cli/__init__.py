"""The `repe-tradeoff` command line: wires the stages and turns errors into messages."""

from __future__ import annotations

import sys

import typer

# Importing a command module registers its commands; this order is --help's.
from repe_tradeoff.cli import measure, analyse, study, vector_io  # noqa: F401, I001
from repe_tradeoff.cli.app import STATE, app, console

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: known errors become one clear message and exit code 1."""
    from repe_tradeoff.errors import user_errors

    try:
        app(standalone_mode=False)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except (typer.BadParameter, typer.Exit) as err:
        if isinstance(err, typer.Exit):
            sys.exit(err.exit_code)
        console.print(f"[red]error:[/] {err}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: finished chunks are saved; rerun the same command to resume")
        sys.exit(130)
    except user_errors() as err:
        if STATE["debug"]:
            raise
        console.print(f"[red]error:[/] {err}")
        console.print("(run with --debug for the traceback)", style="dim")
        sys.exit(1)
    except Exception as err:  # click's own usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise
