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
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import zarr

from tbhcli.hamming.blocks import as_words
from tbhcli.hamming.mih import (
    MultiIndex,
    Segment,
    build_segment,
    choose_substring_count,
    substring_bounds,
)
from tbhcli.storage.store import CodeStore, open_store

TABLES = "mih"
MAX_SEGMENTS = 6  # past this many, the next extension rebuilds all tables as one segment
# Tables opened lately, by store and committed attributes: mapping ~20 files cost ~16 ms a search
# (bench/mih_profile.py). A commit writes new segment files under new names and never changes
# committed ones, so equal attributes mean equal files; their sizes are checked (a stat each).
_OPENED: dict[tuple[str, str], tuple[MultiIndex, list[tuple[Path, int]]]] = {}
MAX_OPENED = 4


def _map(file: Path, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A copy-on-write map of the first bytes of a chunk file (zeros if it was never written)."""
    if not np.prod(shape) or not file.is_file():
        return np.zeros(shape, dtype)
    return np.asarray(np.memmap(file, dtype=dtype, mode="c", shape=shape))


def open_tables(store: CodeStore) -> MultiIndex | None:
    """The store's committed tables, mapped from disk; None when it has none it can use."""
    if TABLES not in store.group.group_keys():
        return None
    group = store.group[TABLES]
    attrs = dict(group.attrs)
    segments = attrs.get("segments")
    keys = {"name", "start", "stop", "distinct", "shifts", "directory", "keys", "width"}
    if (
        attrs.get("bits") != store.bits
        or not segments
        or any(set(entry) != keys for entry in segments)
        or segments[-1]["stop"] > len(store)
    ):
        return None  # none committed, another layout, or rows this store no longer has
    key = (str(store.path), json.dumps(attrs, sort_keys=True))
    if key in _OPENED:
        index, sizes = _OPENED[key]
        if all(_size(file) >= size for file, size in sizes):  # none truncated since
            return index
        del _OPENED[key]
    sizes = []
    bounds = np.asarray(attrs["bounds"], np.int64)
    loaded = []
    for entry in segments:  # shapes come from the attributes: no zarr array is opened
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
                sizes.append((file, int(np.prod(shape)) * np.dtype(dtype).itemsize))
                try:
                    arrays.setdefault(name, []).append(_map(file, dtype, shape))
                except ValueError:  # shorter than its shape: damaged, so not used
                    return None
        codes = [as_words(c) for c in arrays["codes"]]
        loaded.append(
            Segment(entry["start"], entry["stop"], arrays["rows"][0], arrays["runs"][0],
                    arrays["directory"], arrays["ids"], arrays["keys"], codes,
                    list(entry["shifts"]))
        )  # fmt: skip
    index = MultiIndex(store.bits, bounds, loaded)
    if len(_OPENED) >= MAX_OPENED:
        _OPENED.pop(next(iter(_OPENED)))
    _OPENED[key] = index, sizes
    return index


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
            compressors=None,
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
    if TABLES in top.group_keys():
        top[TABLES].attrs["segments"] = []


def update_tables(path: str | Path, build: bool = False) -> tuple[int, int] | None:
    """Extend the store's tables to all committed rows (create them if `build`); hold a StoreLock.

    New rows become a new segment; a store without tables (or with stale ones), more than
    MAX_SEGMENTS segments, or more new rows than indexed ones gets all tables rebuilt, with the
    substring count re-chosen for the store's codes (`choose_substring_count`). Returns (rows
    indexed, segments) or None when the store has no tables and `build` is False.
    """
    path = Path(path)
    store = open_store(path)
    top = zarr.open_group(path, mode="r+", zarr_format=3)
    present = TABLES in top.group_keys()
    if not (present or build):
        return None
    group = top[TABLES] if present else top.create_group(TABLES)
    attrs = dict(group.attrs)
    current = open_tables(store) if present else None
    n = len(store)
    for leftover in set(group.group_keys()) - {s["name"] for s in attrs.get("segments", [])}:
        del group[leftover]

    if current is not None and n == current.rows_indexed:
        return n, len(current.segments)
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
    old = {s["name"] for s in attrs.get("segments", [])} - {e["name"] for e in entries}
    # The commit point: readers see the new tables only now.
    group.attrs.update({"bits": store.bits, "bounds": bounds.tolist(), "segments": entries})
    for name in old:
        del group[name]
    return n, len(entries)
