"""`tbh check --repair`: rebuild a damaged store from its own evidence, losing no whole row.

It keeps every row that check.py finds whole (codes and paths chunks intact and matching their
checksums, a path neither empty nor repeated), in order, also the whole rows after a damaged
chunk; it rebuilds labels and the class list from the class folders of the paths, metadata
(array zarr.json, `bits`, `rows_committed`, the checksum list) from the chunks, and the
multi-index tables from the codes. A store written without checksums gets them. What it cannot
know (`root`, `model_sha256`) stays listed, exit 1. The rows of dropped chunks are re-added by
`tbh index` with the same codes.

The rebuilt store is written to a copy and swapped in like `tbh remove` (writer.rebuilt_copy), so
a killed repair leaves the old store or the new one; every zarr.json of the old store is kept in
`NAME.backup-<time>/` beside it. `dry_run` reports the same changes and writes nothing.
"""

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr

from tbhcli.errors import TbhError
from tbhcli.storage.inspection import CheckReport, TableCheck, class_folder, class_list, inspect
from tbhcli.storage.mih_tables import TABLES, update_tables
from tbhcli.storage.names import decode_name
from tbhcli.storage.store import ARRAYS, QUERIES, open_group
from tbhcli.storage.writer import StoreLock, StoreWriter, create_table, rebuilt_copy, write_errors


def _classes_after(report: CheckReport, classes: list[str] | None) -> list[str]:
    """The class list after a repair: the old one, plus the class folders of kept paths that it
    lacks (sorted, as the writer appends them); all folders when the old one is damaged."""
    names = set()
    for table in report.tables:
        paths = table.values.get("paths", np.zeros(0, object))[table.keep].tolist()
        names |= {class_folder(p) for p in paths} - {None}
    base = classes or []
    return base + sorted(names - set(base))


def _labels(table: TableCheck, classes: list[str], keep_old: bool) -> np.ndarray:
    """Int32 labels [kept rows]: the old label where it is whole and agrees with the path (and
    the old class list stays, `keep_old`), else the index of the path's class folder."""
    index = {c: i for i, c in enumerate(classes)}
    paths = table.values["paths"][table.keep].tolist()
    old = table.values["labels"][table.keep]
    ok = table.labels_ok[table.keep] if keep_old else np.zeros(len(paths), bool)
    names = [class_folder(p) for p in paths]
    built = np.array([-1 if n is None else index[n] for n in names], np.int32)
    return np.where(ok, old, built).astype(np.int32)


def _describe(table: TableCheck, classes_changed: bool) -> None:
    """What rewriting `table` changes, into `table.repaired`."""
    n = len(table.keep)
    dropped = n - table.good_rows
    if dropped:
        table.repaired.append(
            f"dropped {dropped} rows of damaged chunks or paths; kept the {table.good_rows} whole"
        )
    if table.rows != table.good_rows:
        table.repaired.append(f"rows_committed {table.rows!r} -> {table.good_rows}")
    if table.relabel or classes_changed:
        table.repaired.append("labels rebuilt from the class folders of the paths")
    table.repaired.append("rewritten with chunk checksums (metadata from the layout)")


def _rewrite(
    copy: Path, group: zarr.Group, table: TableCheck, labels: np.ndarray, top: zarr.Group
) -> None:
    """Replace the table's arrays in the copy by its kept rows, checksummed."""
    for name in ARRAYS:
        shutil.rmtree(copy / name, ignore_errors=True)
    group.attrs.update({"bits": table.bits})
    create_table(group, table.bits, {})
    writer = StoreWriter(group, copy, top)
    paths = table.values["paths"][table.keep].tolist()
    writer.append(table.values["codes"][table.keep], [decode_name(p) for p in paths], labels)


# attributes no evidence in the arrays can restore
LOST = ("root is", "model_sha256 is")


def _beyond_repair(report: CheckReport) -> str | None:
    """The first damage a repair cannot rebuild from the store's own evidence, or None."""
    for table in report.tables:
        lost = [p for p in table.problems if p.startswith(LOST)]
        if table.bits is None or lost:
            return f"{table.name}: {(lost or table.problems or ['no code width'])[0]}"
    return None


def repair(path: Path, dry_run: bool = False) -> CheckReport:
    """Rebuild the store at `path` from its evidence (module doc); returns what was done."""
    shown_path, path = path, Path(path).resolve()  # the real folder: a symlink stays a link
    with StoreLock(path), write_errors(shown_path, lambda: None):
        top = open_group(path, "r")
        report = inspect(path, top)
        report.store, report.dry_run = shown_path, dry_run
        old_classes = class_list(top)
        classes = _classes_after(report, old_classes)
        classes_changed = classes != old_classes
        refuse = _beyond_repair(report)
        if refuse is not None:  # before anything changes
            raise TbhError(
                f"store {shown_path} cannot be repaired: {refuse}; nothing was changed. Index "
                "the images into a new store (`tbh index IMAGES_DIR --store NEW`)."
            )
        rewrite = [t for t in report.tables if t.rewrite or t.problems or classes_changed]
        mih = (path / TABLES).is_dir()
        rebuild_tables = mih and (bool(report.table_problems) or report.tables[0] in rewrite)
        for table in rewrite:
            _describe(table, classes_changed)
        if classes_changed and old_classes is not None:
            report.tables[0].repaired.append(f"classes: added {len(classes) - len(old_classes)}")
        elif classes_changed:
            report.tables[0].repaired.append(
                f"classes rebuilt from the class folders ({len(classes)})"
            )
        if rebuild_tables:
            report.repaired_tables.append("rebuilt from the codes")
        if dry_run or not (rewrite or rebuild_tables):
            return report
        report.backup = path.parent / f"{path.name}.backup-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        with rebuilt_copy(path, report.backup) as copy:
            new_top = zarr.open_group(copy, mode="r+", zarr_format=3)
            new_top.attrs["classes"] = classes
            for table in rewrite:
                where = copy if table.name == "store" else copy / QUERIES
                group = new_top if table.name == "store" else new_top[QUERIES]
                labels = _labels(table, classes, keep_old=old_classes is not None)
                _rewrite(where, group, table, labels, new_top)
            if rebuild_tables:
                shutil.rmtree(copy / TABLES, ignore_errors=True)
        if rebuild_tables:
            update_tables(path, build=True)
        after = inspect(path, open_group(path, "r"))
        for table, again in zip(report.tables, after.tables, strict=True):
            table.problems, table.rows = again.problems, again.rows
        report.table_problems = after.table_problems
        return report
