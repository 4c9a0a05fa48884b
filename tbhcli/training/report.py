"""What `tbh train` tells the user at the end: held-out scores per method, the verdict, the JSON."""

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tbhcli.training.compare import NAMES

SCHEMA = "tbh.train/1"


def print_summary(run: Path, summary: dict, console: Console) -> None:
    """One table of held-out scores (when there are any), how training ended, the verdict line."""
    if summary.get("steps") is not None:
        ended = {"plateau": "stopped at its validation plateau", "steps": "ran to --steps"}
        best = summary.get("best_step")
        kept = f", kept the weights of step {best}" if best and best != summary["steps"] else ""
        threads = f", {summary['threads']} torch threads" if summary.get("threads") else ""
        console.print(
            f"TBH: {summary['steps']} steps in {summary['seconds']:.0f} s "
            f"({summary['steps_per_s']:.1f} steps/s{threads}), {ended[summary['stopped']]}{kept}.",
            highlight=False,
        )
    for warning in summary.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    scores = summary.get("scores") or {}
    if scores:
        columns = list(next(iter(scores.values())))
        table = Table(title=f"held-out validation of {escape(str(run))}")
        table.add_column("method")
        for name in columns:
            table.add_column(name, justify="right")
        for method, values in scores.items():
            mark = " (kept)" if method == summary["kept"] and len(scores) > 1 else ""
            table.add_row(NAMES[method] + mark, *(f"{values[c]:.4f}" for c in columns))
        console.print(table)
    for method, why in (summary.get("skipped") or {}).items():
        console.print(f"{NAMES[method]} not fitted: {why}", highlight=False)
    if summary.get("verdict"):
        console.print(escape(summary["verdict"]), highlight=False)


def summary_json(run: Path, summary: dict) -> str:
    """`tbh train --json`: the run directory and its summary, one JSON object."""
    return json.dumps({"schema": SCHEMA, "run": str(run), **summary}, indent=2)
