"""Reading a table whose metadata is damaged, by the evidence of its chunks (`tbh check`).

An array whose zarr.json is not JSON, has another dtype, or whose chunk shape or codecs do not
fit its chunk files is read with the metadata the layout prescribes (writer.array_specs): the
chunk size comes from the size of the first codes chunk file, the other array's chunks, or the
chunk count; the codec (with or without crc32c) from which one decodes the first chunk. A lost
or wrong `rows_committed` is the one row count the checksum list proves (`rows_from_checksums`).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.core.array import Array, AsyncArray
from zarr.storage import LocalStore, MemoryStore, StorePath

from tbhcli.storage.checksums import CHECKSUMS, extend
from tbhcli.storage.store import ARRAYS, DECODE_ERRORS, PATH_CHUNK_ROWS, table_arrays


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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


def _chunk_files(path: Path, name: str) -> int:
    """How many chunk files array `name` has (its first dimension's chunk numbers + 1)."""
    folder = path / name / "c"
    numbers = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(numbers) + 1 if numbers else 0


@dataclass
class Evidence:
    """A table's arrays as its chunks can be read, and what was wrong with their metadata."""

    arrays: dict[str, zarr.Array] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    bits: int | None = None
    rewrite: bool = False  # some array's metadata must be written again


def table_readers(group: zarr.Group, path: Path, rows: int | None) -> Evidence:
    """The table's arrays, read with the layout's metadata where theirs is damaged; `rows`: the
    committed rows if known."""
    attrs = dict(group.attrs)
    arrays, problems = table_arrays(group)
    report = Evidence(arrays, problems)
    for name, array in list(arrays.items()):
        if not _dtype_ok(name, array):
            report.problems.append(f"array {name} has dtype {array.dtype}, {array.ndim} dimensions")
            del arrays[name]
    bits = attrs.get("bits")
    if "codes" in arrays:
        bits = arrays["codes"].shape[1] * 8
    if not (is_count(bits) and bits and bits % 8 == 0):
        report.problems.append("the code width cannot be told (codes metadata and bits damaged)")
        report.arrays = {}
        return report
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
            step = _chunk_rows(path, name, bits, readable, rows)
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
        step = _chunk_rows(path, name, bits, readable, rows)
        files = _chunk_files(path, name) * (step or _template(name, bits, 0, True, None).chunks[0])
        arrays[name], _ = evidence_array(path, name, bits, max(files, rows or 0), step)
        report.rewrite = True  # its metadata must be written again
    return report


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
