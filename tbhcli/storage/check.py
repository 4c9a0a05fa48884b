"""`tbh check`: verify a code store (fsck) and, with `repair`, cut it back to its readable prefix.

A check reads every chunk below `rows_committed` of every array, so it finds what an open cannot
see cheaply: chunks that are there but do not decode, empty or repeated paths, labels outside the
class list. It also compares the store's model hash with `onnx/<model>`. A repair keeps the longest
prefix of rows that is whole in all three arrays (nothing readable before the first damaged row
is lost), sets `rows_committed` to it and drops the rest; `tbh index` then re-adds the images of
the dropped rows with the same codes.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from tbhcli.errors import TbhError
from tbhcli.storage.mih_tables import invalidate, update_tables
from tbhcli.storage.store import (
    ARRAYS,
    DECODE_ERRORS,
    QUERIES,
    array_problems,
    attribute_problems,
    chunk_keys,
    missing_chunks,
    open_group,
)
from tbhcli.storage.writer import StoreLock, create_table, writable, write_errors
from tbhcli.workspace import MODELS_DIR, file_sha256, resolve_store


@dataclass
class TableCheck:
    """What checking one table found: problems, and the first row that is not whole."""

    name: str  # "store" or "queries"
    rows: int | None  # rows_committed, None when unusable
    problems: list[str] = field(default_factory=list)
    good_rows: int = 0  # the longest prefix whose rows are whole in all arrays
    repaired: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    store: Path
    tables: list[TableCheck]
    notes: list[str] = field(default_factory=list)  # worth knowing, not damage

    @property
    def problems(self) -> list[str]:
        return [f"{t.name}: {p}" for t in self.tables for p in t.problems]

    @property
    def repaired(self) -> list[str]:
        return [f"{t.name}: {r}" for t in self.tables for r in t.repaired]


def _first_unreadable(group: zarr.Group, name: str, rows: int) -> tuple[int, list[str]]:
    """(first row of the first chunk below `rows` that does not decode, problems)."""
    array = group[name]
    step = array.chunks[0]
    for start in range(0, rows, step):
        try:
            array[start : min(start + step, rows)]
        except DECODE_ERRORS as exc:
            key = chunk_keys(array, start, start + 1)[0][1]
            return start, [f"chunk {name}/{key} (rows from {start}) does not decode: {exc}"]
    return rows, []


def _content_problems(group: zarr.Group, rows: int, classes: list[str]) -> tuple[int, list[str]]:
    """(first row with an empty or repeated path or a label outside the classes, problems)."""
    paths = group["paths"][:rows].tolist()
    labels = np.asarray(group["labels"][:rows])
    bad, problems, seen = rows, [], set()
    for i, path in enumerate(paths):
        if not path or path in seen:
            problems.append(f"row {i} has {'an empty' if not path else 'a repeated'} path {path!r}")
            bad = min(bad, i)
            break
        seen.add(path)
    outside = np.flatnonzero((labels < -1) | (labels >= len(classes)))
    if len(outside):
        problems.append(f"{len(outside)} labels lie outside the {len(classes)} classes")
        bad = min(bad, int(outside[0]))
    return bad, problems


def check_table(group: zarr.Group, path: Path, name: str, top: zarr.Group) -> TableCheck:
    """Every problem of one table, and how many leading rows are whole."""
    attrs = dict(group.attrs)
    rows = attrs.get("rows_committed")
    rows = rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else None
    report = TableCheck(name, rows)
    report.problems += attribute_problems(attrs, top=group is top)
    report.problems += array_problems(group, attrs)
    present = set(group.array_keys())
    if not set(ARRAYS) <= present:
        return report  # good_rows 0: nothing is whole without all three arrays
    lengths = [group[a].shape[0] for a in ARRAYS]
    good = min([*lengths, rows if rows is not None else min(lengths)])
    if report.problems and any("dtype" in p or "dimensions" in p for p in report.problems):
        return report
    for first, key in missing_chunks(group, path, good):
        report.problems.append(f"chunk {key} (rows from {first}) is missing or truncated")
        good = min(good, first)
    for array in ARRAYS:
        first, problems = _first_unreadable(group, array, good)
        report.problems += problems
        good = min(good, first)
    classes = top.attrs.get("classes", [])
    bad, problems = _content_problems(group, good, classes if isinstance(classes, list) else [])
    report.problems += problems
    report.good_rows = min(good, bad)
    return report


def _model_note(top: zarr.Group) -> list[str]:
    """Whether onnx/<model> is the model the store was built with."""
    model = MODELS_DIR / str(top.attrs.get("model", ""))
    if not model.is_file():
        return [f"the store's model {model} is not here; `tbh query` needs --model"]
    if file_sha256(model) != top.attrs.get("model_sha256"):
        return [f"{model} is not the model the store was built with (sha256 differs)"]
    return []


def _repair(group: zarr.Group, path: Path, report: TableCheck) -> None:
    """Cut the table back to `report.good_rows` whole rows; recreate missing arrays."""
    attrs = dict(group.attrs)
    bits = attrs.get("bits")
    if "codes" in group.array_keys() and group["codes"].ndim == 2:
        bits = group["codes"].shape[1] * 8
    if not isinstance(bits, int) or bits <= 0 or bits % 8:
        return  # no width to rebuild with: the problems stay listed
    if not set(ARRAYS) <= set(group.array_keys()):
        create_table(group, bits, {})  # all three, empty, rows_committed 0
        report.repaired.append("recreated the missing arrays empty (0 rows)")
    else:
        for name in ARRAYS:
            array = writable(group[name])
            if array.shape[0] != report.good_rows:
                array.resize((report.good_rows, *array.shape[1:]))
        if report.rows != report.good_rows:
            was = attrs.get("rows_committed")
            report.repaired.append(f"rows_committed {was!r} -> {report.good_rows} (whole rows)")
    if attrs.get("bits") != bits:
        report.repaired.append(f"bits set to {bits}, the width of the codes")
    group.attrs.update({"rows_committed": report.good_rows, "bits": bits})
    for leftover in path.rglob("*.partial"):
        leftover.unlink(missing_ok=True)


def check(store: str | Path | None = None, repair: bool = False) -> CheckReport:
    """Check the store (default ./codes.zarr) and its query set; `repair` cuts damaged tables
    back to their whole rows (under the writer lock). Returns what was found and done."""
    path = resolve_store(store)
    if not (path / "zarr.json").is_file():
        raise TbhError(f"no code store at {path}; build one with `tbh index IMAGES_DIR`.")
    if not repair:
        return _check(path, open_group(path, "r"))
    with StoreLock(path), write_errors(path, lambda: None):
        top = open_group(path, "r+")
        if "rows_committed" not in top.attrs:
            raise TbhError(f"the creation of store {path} was interrupted; rerun `tbh index`.")
        report = _check(path, top)
        for table in report.tables:
            if table.problems:
                group = top if table.name == "store" else top[QUERIES]
                _repair(group, path if group is top else path / QUERIES, table)
        if report.tables[0].repaired:
            invalidate(top)  # rows were cut: the multi-index tables no longer match
        after = _check(path, top)
        for table, again in zip(report.tables, after.tables, strict=True):
            table.problems = again.problems  # what is left
            table.rows = again.rows
        if not after.tables[0].problems and update_tables(path) is not None:
            report.tables[0].repaired.append("multi-index tables checked (rebuilt if stale)")
        return report


def _check(path: Path, top: zarr.Group) -> CheckReport:
    tables = [check_table(top, path, "store", top)]
    if QUERIES in top.group_keys():
        tables.append(check_table(top[QUERIES], path / QUERIES, "queries", top))
    return CheckReport(path, tables, _model_note(top))
