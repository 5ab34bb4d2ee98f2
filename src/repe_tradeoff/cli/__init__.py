"""The `repe-tradeoff` command line: wires the stages and turns errors into messages."""

from __future__ import annotations

import sys

import typer

# Importing a command module registers its commands; this order is --help's.
from repe_tradeoff.cli import measure, analyse, study  # noqa: F401, I001
from repe_tradeoff.cli.app import STATE, app, console

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: the library's errors become one clear message and exit code 1; anything else
    is a bug, reported as one (with its traceback under --debug)."""
    from repe_tradeoff.errors import RepeTradeoffError

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
    except RepeTradeoffError as err:
        if STATE["debug"]:
            raise
        console.print(f"[red]error:[/] {err}")
        console.print("(run with --debug for the traceback)", style="dim")
        sys.exit(1)
    except Exception as err:
        import click

        # usage errors: click's, or those of the click that typer vendors
        if isinstance(err, (click.ClickException, typer.TyperException)) and hasattr(err, "show"):
            err.show()
            sys.exit(err.exit_code)
        if STATE["debug"]:
            raise
        console.print(f"[red]internal error:[/] {type(err).__name__}: {err}")
        console.print("This is a bug in repe-tradeoff: please report it with the command and the output of "
                      "the same command run with --debug (which shows the traceback).", style="dim")
        sys.exit(3)
