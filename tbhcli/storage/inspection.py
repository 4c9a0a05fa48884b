"""What `tbh check` finds in a code store (fsck): `inspect` and the reports it returns.

A check reads every chunk below `rows_committed` of every array, so it finds what an open cannot
see cheaply: chunks that do not decode or fail their crc32c, chunks whose committed rows differ
from the checksum list recorded at commit (a chunk copied over another), empty or repeated paths,
labels that disagree with the class folders of their paths, and multi-index tables that are
damaged or stale. An array whose metadata is unreadable or wrong (its zarr.json) is read with the
metadata the layout prescribes (evidence.py), so its chunks still count as evidence.

What is whole: a row is kept when its codes and paths chunks are whole (decoded, checksums
match) and its path is neither empty nor a repeat; a label is evidence-derived (the class folder
of the path, storage/repair.py rebuilds labels and classes from it), so damaged labels never cost
a row. `tbh check --repair` (repair.py) keeps every such row.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from rich.text import Text

from tbhcli.errors import TbhError
from tbhcli.storage.checksums import CHECKSUMS, chunk_sum, has_codec
from tbhcli.storage.evidence import is_count, rows_from_checksums, table_readers
from tbhcli.storage.names import decode_name
from tbhcli.storage.store import (
    ARRAYS,
    DECODE_ERRORS,
    QUERIES,
    attribute_problems,
    checksum_list_problems,
    chunk_keys,
    has_subgroup,
    member,
    unreadable,
)
from tbhcli.terminal import shown
from tbhcli.workspace import MODELS_DIR, file_sha256


@dataclass
class TableCheck:
    """What checking one table found; `keep` marks the rows a repair keeps."""

    name: str  # "store" or "queries"
    rows: int | None  # rows_committed as recorded, None when missing or not a count
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool [rows read]
    values: dict[str, np.ndarray] = field(default_factory=dict)  # arrays read (rows [0, len(keep)))
    bits: int | None = None
    relabel: bool = False  # labels disagree with the paths: rebuild them (and maybe classes)
    labels_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool [rows read]
    rewrite: bool = False  # something only a rewrite of the table mends
    repaired: list[str] = field(default_factory=list)

    @property
    def good_rows(self) -> int:
        return int(self.keep.sum())


@dataclass
class CheckReport:
    store: Path
    tables: list[TableCheck]
    notes: list[str] = field(default_factory=list)  # worth knowing, not damage
    table_problems: list[str] = field(default_factory=list)  # of the multi-index tables
    repaired_tables: list[str] = field(default_factory=list)
    backup: Path | None = None  # where a repair kept the metadata it replaced
    dry_run: bool = False
    repair_asked: bool = False  # the verb was asked to repair (then no hint to run a repair)

    @property
    def exit_code(self) -> int:
        """1 while the store is damaged (also for a dry run that found damage), else 0."""
        return 1 if self.problems else 0

    def __rich_console__(self, console, options) -> Iterator:
        """What `tbh check` prints: notes, repairs (done or, in a dry run, proposed), problems,
        then one line on the store's state."""
        lines = [f"[yellow]note:[/] {shown(note)}" for note in self.notes]
        done = "[yellow]would repair[/]" if self.dry_run else "[green]repaired[/]"
        lines += [f"{done} {shown(line)}" for line in self.repaired]
        if self.backup is not None:
            lines.append(f"the replaced metadata is kept in {shown(self.backup)}")
        lines += [f"[red]problem[/] {shown(problem)}" for problem in self.problems]
        rows = ", ".join(f"{t.name} {t.rows} rows" for t in self.tables)
        store = f"store {shown(self.store)}"
        if self.dry_run:
            state = "damaged" if self.problems else "OK"
            lines.append(f"{store}: {state} ({rows}); nothing changed (--dry-run)")
        elif self.problems:
            hint = "" if self.repair_asked else "; `tbh check --repair` keeps every whole row"
            lines.append(f"{store}: damaged ({rows}){hint}")
        else:
            then = "; `tbh index` re-adds the dropped images" if self.repaired else ""
            lines.append(f"{store}: OK ({rows}){then}")
        for line in lines:
            yield Text.from_markup(line)

    @property
    def problems(self) -> list[str]:
        return [f"{t.name}: {p}" for t in self.tables for p in t.problems] + [
            f"multi-index: {p}" for p in self.table_problems
        ]

    @property
    def repaired(self) -> list[str]:
        return [f"{t.name}: {r}" for t in self.tables for r in t.repaired] + [
            f"multi-index: {r}" for r in self.repaired_tables
        ]


def _read_chunks(
    name: str,
    array: zarr.Array,
    rows: int,
    sums: list | None,
    missing: set[int],
    report: TableCheck,
) -> tuple[np.ndarray, np.ndarray]:
    """The array's rows [0, rows) (fill where a chunk is bad) and a bool [rows] of whole rows;
    `missing`: first rows of chunks that have no file and must have one."""
    step = array.chunks[0]
    whole = np.ones(rows, bool)
    parts = []
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        where = f"chunk {name}/{chunk_keys(array, start, start + 1)[0][1]} (rows from {start})"
        values = None
        if start in missing:
            report.problems.append(f"{where} is missing")
        else:
            try:
                values = np.asarray(array[start:stop])
            except DECODE_ERRORS as exc:
                report.problems.append(f"{where} {unreadable(exc)}")
        if (
            values is not None
            and sums is not None
            and chunk_sum(name, values) != sums[start // step]
        ):
            report.problems.append(f"{where} does not match the checksum of its committed rows")
            values = None
        if values is None:
            whole[start:stop] = False
            values = np.full((stop - start, *array.shape[1:]), array.fill_value, array.dtype)
        parts.append(values)
    empty = np.zeros((0, *array.shape[1:]), array.dtype)
    return (np.concatenate(parts) if parts else empty), whole


def _missing_files(path: Path, name: str, array: zarr.Array, rows: int) -> set[int]:
    """First rows of the chunks below `rows` that have no file (zarr reads those as fill)."""
    return {first for first, key in chunk_keys(array, 0, rows) if not (path / name / key).is_file()}


def check_table(group: zarr.Group, path: Path, name: str, classes: list[str] | None) -> TableCheck:
    """Every problem of one table, and which rows are whole (`TableCheck.keep`)."""
    attrs = dict(group.attrs)
    rows = attrs.get("rows_committed")
    report = TableCheck(name, rows if is_count(rows) else None)
    report.problems += attribute_problems(attrs, top=name == "store")
    evidence = table_readers(group, path, report.rows)
    report.problems += evidence.problems
    report.bits, report.rewrite, arrays = evidence.bits, evidence.rewrite, evidence.arrays
    if set(arrays) != set(ARRAYS):
        return report
    lengths = min(a.shape[0] for a in arrays.values())
    if report.rows is not None and report.rows > lengths:
        report.problems.append(f"rows_committed is {report.rows} but the arrays hold {lengths}")
    n = report.rows if report.rows is not None and report.rows <= lengths else None
    list_problems = checksum_list_problems(arrays, attrs | {"rows_committed": n})
    if n is None or list_problems:  # the checksum list may still know the committed rows
        found = rows_from_checksums(arrays, attrs.get(CHECKSUMS), lengths)
        if found is not None:
            if found != report.rows:
                report.problems.append(f"rows_committed should be {found} (by the checksums)")
            n, list_problems = found, []
    report.problems += list_problems if CHECKSUMS in attrs or n is None else []
    sums = attrs.get(CHECKSUMS) if n is not None and not list_problems else None
    if n is None:
        n = lengths
        report.problems.append(f"rows_committed is unknown: taking the {n} rows of the arrays")
    if sums is None:
        report.rewrite = True  # the list is written (again) from the chunks as they are
        if not any(has_codec(a) for a in arrays.values()) and CHECKSUMS not in attrs:
            report.notes.append(
                "written without chunk checksums (tbh before 1.x): `tbh check --repair` adds them"
            )
    whole = np.ones(n, bool)
    for array_name, array in arrays.items():
        must = array_name != "labels" or attrs.get("every_chunk_written")
        missing = _missing_files(path, array_name, array, n) if must else set()
        sum_list = sums[array_name] if sums is not None else None
        values, ok = _read_chunks(array_name, array, n, sum_list, missing, report)
        report.values[array_name] = values
        if array_name == "labels":
            report.relabel, report.labels_ok = not ok.all(), ok
        else:
            whole &= ok
    paths = report.values["paths"].tolist()
    seen: set[str] = set()
    for i, stored in enumerate(paths):
        if whole[i] and (not stored or stored in seen):
            report.problems.append(
                f"row {i} has {'an empty' if not stored else 'a repeated'} path {stored!r}"
            )
            whole[i] = False
        elif whole[i]:
            seen.add(stored)
    report.keep = whole
    agree = _labels_agree(report, classes or [])
    if not agree[whole].all():
        report.problems.append("labels disagree with the class folders of their paths")
        report.relabel = True
    report.labels_ok &= agree
    report.rewrite |= report.relabel or not whole.all() or report.rows != n
    return report


def _labels_agree(report: TableCheck, classes: list[str]) -> np.ndarray:
    """Bool [rows]: the label is -1 (none recorded: `tbh duplicates` stores leave all so) or
    names the class folder of the row's path."""
    labels = report.values["labels"].tolist()
    paths = report.values["paths"].tolist()
    agree = np.ones(len(labels), bool)
    for i, (label, stored) in enumerate(zip(labels, paths, strict=True)):
        if label != -1 and not (
            0 <= label < len(classes) and classes[label] == class_folder(stored)
        ):
            agree[i] = False
    return agree


def class_folder(stored: str) -> str | None:
    """The class of a stored path as `images.label_of` gives it: its first folder, else None
    (stored paths are POSIX and normalized, so a split is enough, and fast on millions)."""
    folder, slash, _ = stored.partition("/")
    return decode_name(folder) if slash else None


def class_list(top: zarr.Group) -> list[str] | None:
    """The store's class list, None when it is not a list of names."""
    classes = top.attrs.get("classes")
    if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        return classes
    return None


def _model_note(top: zarr.Group) -> list[str]:
    """Whether onnx/<model> is the model the store was built with."""
    model = MODELS_DIR / str(top.attrs.get("model", ""))
    if not model.is_file():
        return [f"the store's model {model} is not here; `tbh query` needs --model"]
    if file_sha256(model) != top.attrs.get("model_sha256"):
        return [f"{model} is not the model the store was built with (sha256 differs)"]
    return []


def inspect(path: Path, top: zarr.Group) -> CheckReport:
    """Check both tables and the multi-index tables of the store at `path`."""
    from tbhcli.storage.mih_tables import tables_problems

    classes = class_list(top)
    tables = [check_table(top, path, "store", classes)]
    if has_subgroup(top, QUERIES):
        try:
            queries = member(top, QUERIES)
        except TbhError as exc:
            queries = exc
        if isinstance(queries, zarr.Group):
            tables.append(check_table(queries, path / QUERIES, "queries", classes))
        else:
            why = queries if queries is not None else "queries/zarr.json is missing"
            tables.append(TableCheck("queries", None, [f"the query set cannot be read: {why}"]))
    report = CheckReport(path, tables, _model_note(top))
    for table in tables:
        report.notes += [f"{table.name}: {note}" for note in table.notes]
    if not tables[0].problems:
        report.table_problems = tables_problems(path)
    return report
