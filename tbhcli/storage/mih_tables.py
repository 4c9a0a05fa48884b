"""Multi-index tables stored with the codes: the `mih` group of a code store (docs/store.md).

Layout: group `mih` with attributes `bits`, `bounds` (substring bit ranges [m + 1]) and
`segments`, a list of {"name", "start", "stop", "distinct", "shifts", "directory", "keys",
"width"}; each segment is a subgroup holding uint32 arrays `rows` (its rows by code, then row)
and `runs` (where each of its `distinct` codes' rows start), and per substring j uint32 arrays
`directory_j`, `ids_j` and `keys_j` and the distinct codes in the order of `ids_j`, `codes_j`
(uint8 [distinct, word bytes]; `tbhcli.hamming.mih.Segment`), each one uncompressed chunk so that
a search maps it from disk instead of reading it. Tables of another layout (tbh before the
distinct codes) are not used, and the next `update_tables` rebuilds them.

Commit discipline as for the codes (store.py): a writer builds new segment groups, fsyncs their
files, and only then rewrites the `mih` attributes (one atomic zarr.json write), which is what
readers trust; groups no segment names are leftovers of an interrupted writer and are deleted by
the next one. Tables cover rows [0, rows_indexed) with rows_indexed <= rows_committed; rows
appended since are scanned by the search until `update_tables` extends the tables.

Verification (tables are either right or not used): the attribute `source` records the rows
indexed and the checksums of the codes chunks they were built from (checksums.py); every table
file carries zarr's crc32c. The first open in a process checks both (the codes' checksum list,
one partial codes chunk, and every table file's crc32c) and raises `TablesDamaged` naming what
is wrong: the search then scans (planner.py), `tbh check` reports it, and `tbh check --repair` or
the next `tbh index` rebuilds the tables.
"""

import json
import os
import shutil
import time
from pathlib import Path

import google_crc32c
import numpy as np
import zarr

from tbhcli.errors import TbhError
from tbhcli.hamming.blocks import as_words
from tbhcli.hamming.mih import (
    MultiIndex,
    Segment,
    build_segment,
    choose_substring_count,
    substring_bounds,
)
from tbhcli.storage.checksums import CHECKSUMS, CRC32C, chunk_sum
from tbhcli.storage.store import METADATA_ERRORS, CodeStore, StoreDamaged, member, open_store

TABLES = "mih"
MAX_SEGMENTS = 6  # past this many, the next extension rebuilds all tables as one segment
# Tables opened lately, by store and committed attributes: mapping ~20 files cost ~16 ms a search
# (bench/mih_profile.py). A commit writes new segment files under new names and never changes
# committed ones, so equal attributes mean equal files; their sizes are checked (a stat each).
_OPENED: dict[tuple[str, str], tuple[MultiIndex, list[tuple[Path, int]]]] = {}
MAX_OPENED = 4
SEGMENT_KEYS = {"name", "start", "stop", "distinct", "shifts", "directory", "keys", "width"}


class TablesDamaged(TbhError):
    """Multi-index tables that are damaged, stale or unreadable: searches scan instead."""

    def __init__(self, store: Path, what: str):
        super().__init__(
            f"the multi-index tables of {store} are not used ({what}); searches scan until "
            f"`tbh check --store {store} --repair` or the next `tbh index` rebuilds them."
        )


def source_record(store: CodeStore, rows: int) -> dict:
    """What tables of rows [0, rows) are built from: the row count and the checksums of the codes
    chunks holding them (the store's checksum list; computed for the last, partial chunk)."""
    step = store.group["codes"].chunks[0]
    sums = store.attrs.get(CHECKSUMS, {}).get("codes")
    record = []
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        whole_chunk = sums is not None and (stop - start == step or stop == len(store))
        record.append(
            sums[start // step]
            if whole_chunk
            else chunk_sum("codes", store.read_codes(start, stop))
        )
    return {"rows": rows, "codes_crc32c": record}


def _source_problem(store: CodeStore, source: object) -> str | None:
    """Why `source` does not describe the store's codes now, or None."""
    if not isinstance(source, dict) or not isinstance(source.get("codes_crc32c"), list):
        return "they carry no record of the codes they were built from (an older tbh)"
    rows = source.get("rows")
    if not isinstance(rows, int) or rows > len(store):
        return f"they index {rows!r} rows but {len(store)} are committed"
    sums = store.attrs.get(CHECKSUMS, {}).get("codes")
    if sums is None:
        return "the store has no chunk checksums to compare them with"
    step = store.group["codes"].chunks[0]
    recorded = source["codes_crc32c"]
    if len(recorded) != -(-rows // step):
        return "their record of the codes is damaged"
    full = rows // step if rows < len(store) else len(recorded)
    if recorded[:full] != sums[:full] or (
        full < len(recorded)
        and recorded[-1] != chunk_sum("codes", store.read_codes(full * step, rows))
    ):
        return "the codes changed since they were built"
    return None


def _file_problem(file: Path, nbytes: int) -> str | None:
    """Why a table file is not `nbytes` of data followed by their crc32c, or None."""
    if not nbytes:
        return None
    try:
        data = file.read_bytes()
    except OSError:
        return f"{file.name} of {file.parent.name} is missing"
    if len(data) != nbytes + 4 or google_crc32c.value(data[:-4]) != int.from_bytes(
        data[-4:], "little"
    ):
        return f"{file.parent.name} does not match its checksum"
    return None


def _map(file: Path, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A copy-on-write map of the first bytes of a chunk file (zeros if it was never written)."""
    if not np.prod(shape) or not file.is_file():
        return np.zeros(shape, dtype)
    return np.asarray(np.memmap(file, dtype=dtype, mode="c", shape=shape))


def open_tables(store: CodeStore) -> MultiIndex | None:
    """The store's committed tables, mapped from disk; None when it has none. Tables that are
    damaged, stale or unreadable are a `TablesDamaged` error (verified at the first open)."""
    if not (store.path / TABLES).is_dir():
        return None
    try:
        group = member(store.group, TABLES)
    except StoreDamaged as exc:
        raise TablesDamaged(store.path, str(exc)) from None
    if not isinstance(group, zarr.Group):
        raise TablesDamaged(store.path, f"{TABLES}/zarr.json is missing or not a group's")
    attrs = dict(group.attrs)
    segments = attrs.get("segments")
    if not segments:
        return None  # none committed (or marked stale by a writer): the next index builds them
    if (
        attrs.get("bits") != store.bits
        or not isinstance(segments, list)
        or any(not isinstance(e, dict) or set(e) != SEGMENT_KEYS for e in segments)
        or not isinstance(attrs.get("bounds"), list)
    ):
        raise TablesDamaged(store.path, "their attributes are not of this layout")
    key = (
        str(store.path),
        json.dumps(attrs, sort_keys=True),
        json.dumps(store.attrs.get(CHECKSUMS)),
    )
    if key in _OPENED:
        index, sizes = _OPENED[key]
        if all(_size(file) == size for file, size in sizes):  # none truncated since
            return index
        del _OPENED[key]
    problem = _source_problem(store, attrs.get("source"))
    if problem is None and segments[-1]["stop"] != attrs["source"]["rows"]:
        problem = "their segments do not cover the rows they record"
    if problem is not None:
        raise TablesDamaged(store.path, problem)
    try:
        index, sizes = _load(store, attrs)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise TablesDamaged(store.path, f"they cannot be read ({exc})") from None
    if len(_OPENED) >= MAX_OPENED:
        _OPENED.pop(next(iter(_OPENED)))
    _OPENED[key] = index, sizes
    return index


def _load(store: CodeStore, attrs: dict) -> tuple[MultiIndex, list[tuple[Path, int]]]:
    """Map and verify every table file named by the attributes (no zarr array is opened)."""
    sizes = []
    bounds = np.asarray(attrs["bounds"], np.int64)
    loaded = []
    for entry in attrs["segments"]:  # shapes come from the attributes
        folder, n, shapes = store.path / TABLES / entry["name"], entry["stop"] - entry["start"], {}
        m, distinct = len(bounds) - 1, entry["distinct"]
        shapes["rows"], shapes["runs"] = [(n,)], [(distinct + 1,)]
        shapes["ids"] = [(distinct,)] * m
        shapes["codes"] = [(distinct, entry["width"])] * m
        shapes["directory"] = [(size,) for size in entry["directory"]]
        shapes["keys"] = [(size,) for size in entry["keys"]]
        arrays = {}
        for name in ("rows", "runs", "directory", "ids", "keys", "codes"):
            dtype = np.uint8 if name == "codes" else np.uint32
            for j, shape in enumerate(shapes[name]):
                array = name if name in ("rows", "runs") else f"{name}_{j}"
                file = folder.joinpath(array, "c", *["0"] * len(shape))
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                problem = _file_problem(file, nbytes)
                if problem is not None:
                    raise ValueError(f"{entry['name']}/{problem}")
                sizes.append((file, nbytes + 4 if nbytes else 0))
                arrays.setdefault(name, []).append(_map(file, dtype, shape))
        codes = [as_words(c) for c in arrays["codes"]]
        loaded.append(
            Segment(entry["start"], entry["stop"], arrays["rows"][0], arrays["runs"][0],
                    arrays["directory"], arrays["ids"], arrays["keys"], codes,
                    list(entry["shifts"]))
        )  # fmt: skip
    return MultiIndex(store.bits, bounds, loaded), sizes


def tables_problems(path: Path) -> list[str]:
    """What is wrong with the store's multi-index tables (none, or none committed: nothing)."""
    store = open_store(path)
    for key in [k for k in _OPENED if k[0] == str(store.path)]:
        del _OPENED[key]  # verify again, from disk
    try:
        open_tables(store)
    except TablesDamaged as exc:
        return [str(exc)]
    return []


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _write_segment(group: zarr.Group, folder: Path, segment: Segment) -> dict:
    name = f"rows-{segment.start}-{segment.stop}-{time.time_ns():x}"  # never a committed name
    sub = group.create_group(name, overwrite=True)
    arrays = [("rows", segment.rows), ("runs", segment.runs)]
    for j in range(len(segment.ids)):
        arrays += [
            (f"directory_{j}", segment.directories[j]),
            (f"ids_{j}", segment.ids[j]),
            (f"keys_{j}", segment.keys[j]),
            (f"codes_{j}", segment.codes[j].view(np.uint8)),
        ]
    for array_name, values in arrays:
        array = sub.create_array(
            array_name,
            shape=values.shape,
            chunks=tuple(max(1, x) for x in values.shape),
            dtype=values.dtype,
            compressors=[CRC32C],
            fill_value=0,
        )
        if values.size:
            array[:] = values
    _fsync(folder / name)
    return {
        "name": name,
        "start": segment.start,
        "stop": segment.stop,
        "distinct": len(segment.ids[0]),
        "shifts": segment.shifts,
        "directory": [len(d) for d in segment.directories],
        "keys": [len(k) for k in segment.keys],
        "width": segment.codes[0].shape[1] * segment.codes[0].itemsize,
    }


def invalidate(top: zarr.Group) -> None:
    """Mark a store's tables stale (rows were removed or cut): searches scan until
    `update_tables` rebuilds them. For writers that change committed rows; hold the lock."""
    folder = Path(top.store.root, top.path, TABLES)
    if folder.is_dir():
        shutil.rmtree(folder)
        top.create_group(TABLES).attrs.update({"segments": []})


def update_tables(path: str | Path, build: bool = False) -> tuple[int, int] | None:
    """Extend the store's tables to all committed rows (create them if `build`); hold a StoreLock.

    New rows become a new segment; a store without tables (or with stale, damaged or unreadable
    ones), more than MAX_SEGMENTS segments, or more new rows than indexed ones gets all tables
    rebuilt, with the substring count re-chosen for the store's codes (`choose_substring_count`).
    Returns (rows indexed, segments) or None when the store has no tables and `build` is False.
    """
    path = Path(path)
    store = open_store(path)
    present = (path / TABLES).is_dir()
    if not (present or build):
        return None
    try:
        current = open_tables(store)
        top = zarr.open_group(path, mode="r+", zarr_format=3)
        group = top[TABLES] if present else top.create_group(TABLES)
        attrs = dict(group.attrs)
        leftovers = set(group.group_keys()) - {s["name"] for s in attrs.get("segments") or []}
    except (TablesDamaged, *METADATA_ERRORS):
        shutil.rmtree(path / TABLES, ignore_errors=True)  # rebuilt from the codes below
        top = zarr.open_group(path, mode="r+", zarr_format=3)
        group, attrs, current, leftovers = top.create_group(TABLES), {}, None, set()
    n = len(store)
    for leftover in leftovers:
        del group[leftover]

    if current is not None and n == current.rows_indexed:
        return n, len(current.segments)
    if n == 0:  # nothing to index: no segment (a search of an empty store scans nothing)
        group.attrs.update({"bits": store.bits, "segments": []})
        return 0, 0
    grow = current is not None and len(current.segments) < MAX_SEGMENTS
    if grow and n - current.rows_indexed <= current.rows_indexed:
        bounds, entries = current.bounds, list(attrs["segments"])
        start = current.rows_indexed
        words = np.ascontiguousarray(as_words(store.read_codes(start, n)))  # the new rows only
    else:
        entries, start = [], 0
        words = np.ascontiguousarray(as_words(store.read_codes(0, n)))
        bounds = substring_bounds(store.bits, choose_substring_count(words))
    segment = build_segment(words, bounds, start)
    entries.append(_write_segment(group, path / TABLES, segment))
    old = {s["name"] for s in attrs.get("segments") or []} - {e["name"] for e in entries}
    # The commit point: readers see the new tables only now.
    group.attrs.update(
        {"bits": store.bits, "bounds": bounds.tolist(), "segments": entries,
         "source": source_record(store, n)}
    )  # fmt: skip
    for name in old:
        del group[name]
    return n, len(entries)
