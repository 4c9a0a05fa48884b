"""How the reports of store upkeep print: the rows `tbh remove` (and `tbh index --prune`) drop."""

from collections.abc import Iterator

from rich.text import Text

from tbhcli.storage.prune import RemoveReport
from tbhcli.terminal import shown


def removed_lines(report: RemoveReport) -> Iterator[Text]:
    """Per table: how many rows went and stayed, then the first five names that went."""
    for table, names in report.removed.items():
        yield Text.from_markup(
            f"{table}: {len(names)} removed (file gone), {report.rows[table]} kept"
        )
        for name in names[:5]:
            yield Text.from_markup(f"  [yellow]removed[/] {shown(name)}")
