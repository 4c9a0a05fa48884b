"""`tbh check`: verify a code store (fsck); with `repair`, rebuild it from its own evidence.

A check reads every chunk below `rows_committed` of every array, so it finds what an open cannot
see cheaply: chunks that do not decode or fail their crc32c, chunks whose committed rows differ
from the checksum list recorded at commit (a chunk copied over another), empty or repeated paths,
labels that disagree with the class folders of their paths, and multi-index tables that are
damaged or stale. An array whose metadata is unreadable or wrong (its zarr.json) is read with the
metadata the layout prescribes (`evidence_array`), so its chunks still count as evidence.

What is whole: a row is kept when its codes and paths chunks are whole (decoded, checksums
match) and its path is neither empty nor a repeat; a label is evidence-derived (the class folder
of the path, storage/repair.py rebuilds labels and classes from it), so damaged labels never cost
a row. `tbh check --repair` (repair.py) keeps every such row.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.core.array import Array, AsyncArray
from zarr.storage import LocalStore, MemoryStore, StorePath

from tbhcli.errors import TbhError
from tbhcli.storage.checksums import CHECKSUMS, chunk_sum, extend, has_codec
from tbhcli.storage.names import decode_name
from tbhcli.storage.store import (
    ARRAYS,
    DECODE_ERRORS,
    PATH_CHUNK_ROWS,
    QUERIES,
    attribute_problems,
    checksum_list_problems,
    chunk_keys,
    has_subgroup,
    member,
    open_group,
    table_arrays,
)
from tbhcli.workspace import MODELS_DIR, file_sha256, resolve_store


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


def _template(name: str, bits: int, rows: int, checksums: bool, step: int | None) -> zarr.Array:
    from tbhcli.storage.writer import array_specs  # the writer owns how arrays are created

    spec = array_specs(bits, checksums)[name]
    spec = spec | {"shape": (rows, *spec["shape"][1:])}
    if step is not None:
        spec["chunks"] = (step, *spec["chunks"][1:])
    return zarr.create_array(MemoryStore(), **spec)


def _chunk_rows(
    path: Path, name: str, bits: int, readable: dict[str, zarr.Array], rows: int | None = None
) -> int | None:
    """Rows per chunk of array `name`, whose metadata is damaged: from the size of its first
    chunk file (codes, stored raw), or the chunks of paths/labels (they share them), or what
    their damaged metadata or chunk count (for `rows` committed rows) tells; None: the layout's."""
    if name == "codes":
        first = path / "codes" / "c" / "0" / "0"
        size = first.stat().st_size if first.is_file() else 0
        for extra in (4, 0):  # with or without the crc32c
            if size > extra and (size - extra) % (bits // 8) == 0:
                return (size - extra) // (bits // 8)
        return None
    other = readable.get("labels" if name == "paths" else "paths")
    if other is not None:
        return other.chunks[0]
    # Neither has readable metadata: a chunk shape either file still records, else the size
    # whose chunk count fits the committed rows (when they are known)
    recorded = []
    for either in ("paths", "labels"):
        try:
            meta = json.loads((path / either / "zarr.json").read_text())
            recorded.append(int(meta["chunk_grid"]["configuration"]["chunk_shape"][0]))
        except (OSError, ValueError, TypeError, LookupError):
            continue
    files = _chunk_files(path, name)
    for step in [*recorded, PATH_CHUNK_ROWS, *(1 << k for k in range(31))]:
        if step > 0 and (rows is None or -(-rows // step) == files):
            return step
    return None


def evidence_array(
    path: Path, name: str, bits: int, rows: int, step: int | None
) -> tuple[zarr.Array, bool]:
    """Array `name` of the table at `path` read with the layout's metadata (its own is damaged;
    `step` rows a chunk, None: the layout's): with the crc32c codec if its first chunk decodes
    so, else without; and whether the first chunk decodes."""
    first = None
    for checksums in (True, False):
        meta = _template(name, bits, rows, checksums, step).metadata
        store = StorePath(LocalStore(path, read_only=True), name)
        array = Array(AsyncArray(metadata=meta, store_path=store))
        first = first or array
        if _decodes_first(array):
            return array, True
    return first, False  # chunk 0 is damaged either way: read the rest with checksums


def _decodes_first(array: zarr.Array) -> bool:
    try:
        array[: min(array.shape[0], array.chunks[0])]
        return True
    except DECODE_ERRORS:
        return False


def _dtype_ok(name: str, array: zarr.Array) -> bool:
    want = {"codes": (np.uint8, 2), "labels": (np.int32, 1)}
    if name == "paths":
        return array.dtype.kind in "TUO" and array.ndim == 1
    return array.dtype == want[name][0] and array.ndim == want[name][1]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _chunk_files(path: Path, name: str) -> int:
    """How many chunk files array `name` has (its first dimension's chunk numbers + 1)."""
    folder = path / name / "c"
    numbers = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(numbers) + 1 if numbers else 0


def table_readers(group: zarr.Group, path: Path, report: TableCheck) -> dict[str, zarr.Array]:
    """The table's arrays, by evidence where their metadata is damaged (problems recorded)."""
    attrs = dict(group.attrs)
    arrays, problems = table_arrays(group)
    report.problems += problems
    for name, array in list(arrays.items()):
        if not _dtype_ok(name, array):
            report.problems.append(f"array {name} has dtype {array.dtype}, {array.ndim} dimensions")
            del arrays[name]
    bits = attrs.get("bits")
    if "codes" in arrays:
        bits = arrays["codes"].shape[1] * 8
    if not (_is_count(bits) and bits and bits % 8 == 0):
        report.problems.append("the code width cannot be told (codes metadata and bits damaged)")
        return {}
    report.bits = bits
    readable = dict(arrays)
    sums = attrs.get(CHECKSUMS)
    for name, array in readable.items():  # readable metadata that contradicts the chunks
        listed = sums.get(name) if isinstance(sums, dict) else None
        step = array.chunks[0]
        if isinstance(listed, list) and array.shape[0] <= (len(listed) - 1) * step:
            alt, _ = evidence_array(path, name, bits, len(listed) * step, step)
            report.problems.append(f"array {name} has {array.shape[0]} rows, its chunks more")
        elif not _decodes_first(array):
            step = _chunk_rows(path, name, bits, readable, report.rows)
            alt, decodes = evidence_array(path, name, bits, array.shape[0], step)
            if not decodes:
                continue
            report.problems.append(f"the metadata of array {name} does not fit its chunks")
        else:
            continue
        arrays[name], report.rewrite = alt, True
    for name in ARRAYS:
        if name in arrays or not (path / name).is_dir():
            continue
        step = _chunk_rows(path, name, bits, readable, report.rows)
        rows = _chunk_files(path, name) * (step or _template(name, bits, 0, True, None).chunks[0])
        arrays[name], _ = evidence_array(path, name, bits, max(rows, report.rows or 0), step)
        report.rewrite = True  # its metadata must be written again
    return arrays


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
                report.problems.append(f"{where} does not decode ({exc})")
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


def rows_from_checksums(arrays: dict[str, zarr.Array], sums: object, lengths: int) -> int | None:
    """The committed row count that the checksum list proves: the one n for which every array's
    last listed chunk holds rows up to n with the listed checksum; None when no single n does."""
    if not isinstance(sums, dict) or not all(isinstance(sums.get(a), list) for a in ARRAYS):
        return None
    counts = {a: len(sums[a]) for a in ARRAYS}
    lo, hi = 0, lengths
    for name, array in arrays.items():
        step = array.chunks[0]
        lo, hi = (
            max(lo, (counts[name] - 1) * step + 1 if counts[name] else 0),
            min(hi, counts[name] * step),
        )
    if lo > hi:
        return None
    if hi == 0:
        return 0
    fits = None
    for name, array in arrays.items():
        start = (lo - 1) // array.chunks[0] * array.chunks[0]
        values = np.asarray(array[start:hi])
        crc, good = None, set()
        for row in range(start, hi):
            crc = extend(crc, name, values[row - start : row - start + 1])
            if row + 1 >= lo and crc == sums[name][-1]:
                good.add(row + 1)
        fits = good if fits is None else fits & good
    return fits.pop() if fits is not None and len(fits) == 1 else None


def _missing_files(path: Path, name: str, array: zarr.Array, rows: int) -> set[int]:
    """First rows of the chunks below `rows` that have no file (zarr reads those as fill)."""
    return {first for first, key in chunk_keys(array, 0, rows) if not (path / name / key).is_file()}


def check_table(group: zarr.Group, path: Path, name: str, classes: list[str] | None) -> TableCheck:
    """Every problem of one table, and which rows are whole (`TableCheck.keep`)."""
    attrs = dict(group.attrs)
    rows = attrs.get("rows_committed")
    report = TableCheck(name, rows if _is_count(rows) else None)
    report.problems += attribute_problems(attrs, top=name == "store")
    arrays = table_readers(group, path, report)
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
            report.relabel = not ok.all()
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
    if classes is not None and not _labels_agree(report, classes):
        report.problems.append("labels disagree with the class folders of their paths")
        report.relabel = True
    report.rewrite |= report.relabel or not whole.all() or report.rows != n
    return report


def _labels_agree(report: TableCheck, classes: list[str]) -> bool:
    labels = report.values["labels"][report.keep]
    paths = report.values["paths"][report.keep].tolist()
    for label, stored in zip(labels.tolist(), paths, strict=True):
        name = class_folder(stored)
        if (name is None) != (label == -1) or (
            label != -1 and (label >= len(classes) or classes[label] != name)
        ):
            return False
    return True


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
    if not (repair or dry_run):
        return inspect(path, open_group(path, "r"))
    from tbhcli.storage.repair import repair as run_repair

    return run_repair(path, dry_run)
