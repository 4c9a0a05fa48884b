"""The `tbh` command: a thin Typer layer; each subcommand calls the library verb of its name."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tbhcli.errors import TbhError

app = typer.Typer(
    help="Twin-Bottleneck Hashing: train, export, index, query and evaluate binary image codes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


# ---- commands: each block is owned by the module it calls --------------------------------------


def main() -> None:
    """Entry point: user errors become one red line and exit status 1."""
    try:
        app()
    except TbhError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; rerun the same command to resume.")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
