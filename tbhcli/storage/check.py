"""`tbh check`: verify a code store (inspection.py); with `repair`, rebuild it from its own
evidence (repair.py). This verb sits above both, so neither imports the other's caller."""

from pathlib import Path

from tbhcli.errors import TbhError
from tbhcli.storage.inspection import CheckReport, inspect
from tbhcli.storage.repair import repair as run_repair
from tbhcli.storage.store import QUERIES, open_group
from tbhcli.workspace import resolve_store


def check(
    store: str | Path | None = None, repair: bool = False, dry_run: bool = False
) -> CheckReport:
    """Check the store (default ./codes.zarr) and its query set; `repair` rebuilds damaged tables
    from their evidence under the writer lock (repair.py; `dry_run`: only say what it would do).
    Returns what was found and done."""
    path = resolve_store(store)
    if path.name == QUERIES and (path.parent / "zarr.json").is_file():
        raise TbhError(
            f"{path} is the query set of store {path.parent}; check that store: "
            f"`tbh check --store {path.parent}{' --repair' if repair else ''}`."
        )
    if not (path / "zarr.json").is_file():
        raise TbhError(f"no code store at {path}; build one with `tbh index IMAGES_DIR`.")
    if repair or dry_run:
        report = run_repair(path, dry_run)
    else:
        report = inspect(path, open_group(path, "r"))
    report.repair_asked = repair
    return report
