"""`tbh remove` (and `tbh index --prune`): drop the rows whose image files are gone.

Rows cannot be deleted in place without breaking crash safety (a killed rewrite would leave
committed rows shifted), so the store is copied beside itself (`.NAME.new`), the copy is
compacted (kept rows in their order, codes byte for byte), synced, and swapped in with two renames
under the writer lock. A kill before the swap leaves the old store; one between the renames is
completed by the next writer (`writer.finish_swap`). Readers that open the store during the swap
may find it missing for a moment.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from tbhcli.errors import TbhError
from tbhcli.storage.checksums import CHECKSUMS, appended
from tbhcli.storage.mih_tables import invalidate, update_tables
from tbhcli.storage.store import ARRAYS, QUERIES, open_store
from tbhcli.storage.writer import StoreLock, rebuilt_copy, writable, write_errors
from tbhcli.workspace import resolve_store


@dataclass
class RemoveReport:
    store: Path
    removed: dict[str, list[str]] = field(default_factory=dict)  # table -> file names dropped
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows left


def gone_rows(table) -> np.ndarray:
    """Rows [k] of a table (CodeStore) whose file does not exist under its root."""
    root = table.root
    names = table.names(np.arange(len(table)))
    return np.array([i for i, n in enumerate(names) if not (root / n).exists()], dtype=np.int64)


def _compact(group: zarr.Group, keep: np.ndarray) -> None:
    """Rewrite a table of the copy with only rows `keep` (sorted), in order."""
    rows, sums = group.attrs["rows_committed"], group.attrs.get(CHECKSUMS)
    for name in ARRAYS:
        array = writable(group[name])
        kept = array[:rows][keep]
        array.resize((len(keep), *array.shape[1:]))
        if len(keep):
            array[:] = kept
        if sums is not None:
            sums[name] = appended([], name, array.chunks[0], 0, kept)
    group.attrs.update({"rows_committed": len(keep)} | ({CHECKSUMS: sums} if sums else {}))


def remove(store: str | Path | None = None) -> RemoveReport:
    """Drop the rows of the store (default ./codes.zarr) and of its query set whose files are
    gone; the other rows keep their codes, paths, labels and order."""
    shown_path = resolve_store(store)
    path = shown_path.resolve()  # the real folder: a symlinked store stays a link
    with StoreLock(path), write_errors(shown_path, lambda: len(open_store(path))):
        db = open_store(path)
        tables = {"store": db} | ({"queries": db.queries} if db.queries is not None else {})
        report = RemoveReport(shown_path)
        gone = {name: gone_rows(t) for name, t in tables.items()}
        for name, table in tables.items():
            report.removed[name] = table.names(gone[name])
            report.rows[name] = len(table) - len(gone[name])
        if not any(len(g) for g in gone.values()):
            return report
        if len(gone["store"]) == len(db):
            raise TbhError(
                f"none of the {len(db)} files of store {path} exist under {db.root}; if the "
                "folder moved, re-point the store with `tbh index NEW_FOLDER --root`."
            )
        with rebuilt_copy(path) as new:
            copy = zarr.open_group(new, mode="r+", zarr_format=3)
            for name, rows in gone.items():
                if len(rows):
                    group = copy if name == "store" else copy[QUERIES]
                    _compact(group, np.setdiff1d(np.arange(len(tables[name])), rows))
            if len(gone["store"]):
                invalidate(copy)  # rows shifted: the multi-index tables are rebuilt below
        update_tables(path)
    return report
