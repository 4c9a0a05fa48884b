"""What `tbh train` tells the user at the end: held-out scores per method, the verdict, the JSON."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, ConsoleOptions
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tbhcli.jsondoc import document
from tbhcli.training.compare import NAMES
from tbhcli.workspace import Artefact


@dataclass
class TrainRun(Artefact):
    """A finished run: its directory and its summary (what `tbh train` prints, `--json` gives).

    It is also the run's path (`os.fspath(run)`, `run / "config.json"`), so it goes wherever a
    run directory does: `tbhcli.export(run)`, `tbhcli.evaluate(run=run, ...)`.
    """

    path: Path
    summary: dict  # the log's last summary row (tbhcli.training.fit.summary)

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """Held-out scores by method, e.g. {"tbh": {"recall@100": 0.45}, "itq": {...}}."""
        return self.summary.get("scores") or {}

    @property
    def kept(self) -> str:
        """The method whose codes the run holds ("tbh", or the baseline `method="auto"` kept)."""
        return self.summary["kept"]

    @property
    def verdict(self) -> str | None:
        """One sentence: which codes were better on the held-out items."""
        return self.summary.get("verdict")

    def to_json(self) -> str:
        """The `tbh.train/1` document: the run directory and its summary."""
        return document("train", {"run": self.path, **self.summary})

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator:
        """How training ended, a table of held-out scores (when there are any), the verdict."""
        summary = self.summary
        if summary.get("steps") is not None:
            ended = {"plateau": "stopped at its validation plateau", "steps": "ran to --steps"}
            best = summary.get("best_step")
            kept = f", kept the weights of step {best}" if best and best != summary["steps"] else ""
            threads = f", {summary['threads']} torch threads" if summary.get("threads") else ""
            speed = f"{summary['steps_per_s']:.1f} steps/s{threads}"
            yield Text(
                f"TBH: {summary['steps']} steps in {summary['seconds']:.0f} s ({speed}), "
                f"{ended[summary['stopped']]}{kept}."
            )
        for warning in summary.get("warnings") or []:
            yield Text.from_markup(f"[yellow]warning:[/] {escape(warning)}")
        if self.scores:
            columns = list(next(iter(self.scores.values())))
            table = Table(title=f"held-out validation of {escape(str(self.path))}")
            table.add_column("method")
            for name in columns:
                table.add_column(name, justify="right")
            for method, values in self.scores.items():
                mark = " (kept)" if method == self.kept and len(self.scores) > 1 else ""
                table.add_row(NAMES[method] + mark, *(f"{values[c]:.4f}" for c in columns))
            yield table
        for method, why in (summary.get("skipped") or {}).items():
            yield Text(f"{NAMES[method]} not fitted: {why}")
        if self.verdict:
            yield Text(self.verdict)
