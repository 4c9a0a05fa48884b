"""The `tbh` command: a thin Typer layer; each subcommand calls the library verb of its name."""

from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from tbhcli.errors import TbhError

err_console = Console(stderr=True)


class _UserErrorsAsOneLine(TyperGroup):
    """Print a TbhError from any command as one red line and exit 1 (also under CliRunner)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TbhError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_UserErrorsAsOneLine,
    help="Twin-Bottleneck Hashing: train, export, index, query and evaluate binary image codes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# ---- commands: each block is owned by the module it calls --------------------------------------


def main() -> None:
    """Entry point of the `tbh` console script."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; rerun the same command to resume.")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
