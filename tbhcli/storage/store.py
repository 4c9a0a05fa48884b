"""The code store `codes.zarr`: its layout and its read side (`open_store` -> `CodeStore`).

Layout (docs/store.md): arrays `codes` uint8 [N, bits/8] (uncompressed, row-chunked), `paths`
str [N] (relative to the table's `root`, escaped by names.py), `labels` int32 [N] (-1 = none,
else an index into the root's `classes`), and group attributes. An optional subgroup `queries`
holds the query set with the same arrays. Only rows [0, rows_committed) of a table are valid.

zarr reads a chunk file that is not there as its fill value (zeros, "", -1), so a deleted chunk
would silently become wrong codes. Opening a table therefore validates its attributes and checks
that every chunk below `rows_committed` is on disk (one stat per codes chunk, one directory
listing per 1-d array); a chunk that is there but cannot be decoded, or whose crc32c checksum does
not match its bytes (checksums.py), fails when it is read. Both are a `StoreDamaged` error that
names the chunk and says to run `tbh check --repair`. Arrays are opened by name (`table_arrays`),
never by listing the group, so unreadable metadata of one member (say `mih/`) breaks nothing else.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr

from tbhcli.errors import TbhError
from tbhcli.storage.checksums import CHECKSUMS, CRC32C, chunk_sum, has_codec
from tbhcli.storage.names import decode_name

FORMAT_VERSION = 1
QUERIES = "queries"
CODE_CHUNK_BYTES = 1 << 20  # append rewrites the last chunk, so keep chunks small
PATH_CHUNK_ROWS = 16384
ARRAYS = ("codes", "paths", "labels")
# Set on tables whose writers store chunks equal to the fill value too (all -1 labels, say):
# only there is a missing labels chunk proof of damage. Older tables leave such chunks out.
EVERY_CHUNK = "every_chunk_written"
# zarr's errors for a chunk file that is truncated or garbled (codec, checksum or reshape failures)
DECODE_ERRORS = (ValueError, RuntimeError, EOFError, TypeError)
# ... and for a zarr.json that is not JSON or not valid metadata
METADATA_ERRORS = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError)


def _dtype_ok(name: str, dtype: np.dtype) -> bool:
    return (
        dtype.kind in "TUO" if name == "paths" else dtype == (np.uint8, np.int32)[name != "codes"]
    )


class StoreDamaged(TbhError):
    """A store whose files contradict its attributes; `tbh check --repair` makes it usable."""


def unreadable(exc: Exception) -> str:
    """Why a chunk cannot be read, in words (zarr's crc32c codec reports raw checksum bytes)."""
    if "checksum do not match" in str(exc):
        return "fails its crc32c checksum (its bytes changed)"
    return f"does not decode ({exc})"


def damaged(path: Path, what: str, store: Path | None = None) -> StoreDamaged:
    """The error for damage to the table at `path` of `store` (default: `path` is the store)."""
    return StoreDamaged(
        f"store {path} is damaged: {what}; run `tbh check --store {store or path} --repair` "
        "(it keeps every whole row), then `tbh index` to re-add the rest."
    )


def code_chunk_rows(bits: int) -> int:
    """Rows per `codes` chunk: a power of two (>= 1024) of about `CODE_CHUNK_BYTES` of codes."""
    return 1 << max(10, (CODE_CHUNK_BYTES // (bits // 8)).bit_length() - 1)


def resolve_root(store_path: Path, root: str) -> Path:
    """The absolute folder of a table's `root` attribute (relative roots: to the store folder)."""
    return Path(os.path.normpath(Path(store_path).absolute() / root))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def attribute_problems(attrs: dict, top: bool) -> list[str]:
    """What is wrong with a table's attributes (`top`: the root group, which has more)."""
    problems = []
    rows = attrs.get("rows_committed")
    if not _is_int(rows) or rows < 0:
        problems.append(f"rows_committed is {rows!r}, not a row count")
    bits = attrs.get("bits")
    if not _is_int(bits) or bits <= 0 or bits % 8:
        problems.append(f"bits is {bits!r}, not a positive multiple of 8")
    if not isinstance(attrs.get("root"), str) or not attrs.get("root"):
        problems.append(f"root is {attrs.get('root')!r}, not a folder")
    if top:
        sha = attrs.get("model_sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            problems.append(f"model_sha256 is {sha!r}, not a sha256")
        classes = attrs.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            problems.append("classes is not a list of names")
    return problems


def member(group: zarr.Group, name: str) -> zarr.Array | zarr.Group | None:
    """`group[name]`, None when absent; unreadable metadata is a `StoreDamaged` error."""
    if not isinstance(group, zarr.Group):
        raise StoreDamaged(f"the metadata of {group.path or 'the store'} is not a group's")
    try:
        return group[name]
    except KeyError:
        return None
    except METADATA_ERRORS as exc:
        raise StoreDamaged(f"the metadata of {name} cannot be read ({exc})") from None


def table_arrays(group: zarr.Group) -> tuple[dict[str, zarr.Array], list[str]]:
    """The table's arrays that open, by name, and what is wrong with the others."""
    arrays, problems = {}, []
    for name in ARRAYS:
        try:
            array = member(group, name)
        except StoreDamaged as exc:
            problems.append(f"array {exc}")
            continue
        if isinstance(array, zarr.Array):
            arrays[name] = array
        else:
            problems.append(f"array {name} is missing")
    return arrays, problems


def has_subgroup(group: zarr.Group, name: str) -> bool:
    """Whether `name` is a subgroup on disk, maybe a damaged one (a folder of that name; its
    metadata is not parsed)."""
    return isinstance(group.store, zarr.storage.LocalStore) and (
        Path(group.store.root, group.path, name, "zarr.json").is_file()
        or Path(group.store.root, group.path, name).is_dir()
    )


def array_problems(group: zarr.Group, attrs: dict) -> list[str]:
    """Missing or unreadable arrays, wrong dtypes or widths, a `rows_committed` beyond an array's
    length, a checksum list that does not fit the rows."""
    arrays, problems = table_arrays(group)
    for name, array in arrays.items():
        if not _dtype_ok(name, array.dtype):
            problems.append(f"array {name} has dtype {array.dtype}")
        if array.ndim != (2 if name == "codes" else 1):
            problems.append(f"array {name} has {array.ndim} dimensions")
        elif _is_int(attrs.get("rows_committed")) and attrs["rows_committed"] > array.shape[0]:
            problems.append(
                f"rows_committed is {attrs['rows_committed']} but array {name} has "
                f"{array.shape[0]} rows"
            )
        bits = attrs.get("bits")
        if name == "codes" and array.ndim == 2 and _is_int(bits) and array.shape[1] * 8 != bits:
            problems.append(f"codes are {array.shape[1] * 8} bits wide but bits is {bits}")
    return problems + checksum_list_problems(arrays, attrs)


def checksum_list_problems(arrays: dict[str, zarr.Array], attrs: dict) -> list[str]:
    """A checksum list that is missing where the chunks carry checksums, or does not have one
    entry per committed chunk."""
    sums, rows = attrs.get(CHECKSUMS), attrs.get("rows_committed")
    if sums is None:
        if any(has_codec(a) for a in arrays.values()):
            return [f"the chunk checksum list ({CHECKSUMS}) is missing"]
        return []
    if not isinstance(sums, dict) or not _is_int(rows) or rows < 0:
        return [f"the chunk checksum list ({CHECKSUMS}) is not a list per array"]
    problems = []
    for name, array in arrays.items():
        entries = sums.get(name)
        want = -(-rows // array.chunks[0])
        if not isinstance(entries, list) or len(entries) != want or not all(map(_is_int, entries)):
            problems.append(f"the chunk checksum list of {name} does not have {want} entries")
    return problems


def chunk_file_size(array: zarr.Array) -> int | None:
    """Bytes of each chunk file of an array stored raw (maybe plus a crc32c), else None."""
    if any(c != CRC32C for c in array.compressors):
        return None
    return int(np.prod(array.chunks)) * array.dtype.itemsize + 4 * has_codec(array)


def chunk_keys(array: zarr.Array, start: int, stop: int) -> list[tuple[int, str]]:
    """(first row, chunk key like "c/3/0") of the chunks holding rows [start, stop)."""
    step = array.chunks[0]
    first = (start // step) * step
    encode = array.metadata.chunk_key_encoding.encode_chunk_key
    return [(r, encode((r // step,) + (0,) * (array.ndim - 1))) for r in range(first, stop, step)]


def missing_chunks(group: zarr.Group, path: Path, rows: int) -> list[tuple[int, str]]:
    """(first row, "array/key") of the chunks below `rows` that are absent or of the wrong size."""
    bad = []
    for name, array in table_arrays(group)[0].items():
        if name == "labels" and not group.attrs.get(EVERY_CHUNK):
            continue
        keys = chunk_keys(array, 0, rows)
        size = chunk_file_size(array)
        if name == "codes" and size is not None:  # uncompressed: the size is known
            for first, key in keys:
                file = path / name / key
                if not file.is_file() or file.stat().st_size != size:
                    bad.append((first, f"{name}/{key}"))
            continue
        listed = set()
        for folder in {Path(key).parent for _, key in keys}:
            with contextlib.suppress(FileNotFoundError):  # no chunk at all: all missing
                listed |= {(folder / f).as_posix() for f in os.listdir(path / name / folder)}
        bad += [(first, f"{name}/{key}") for first, key in keys if key not in listed]
    return sorted(bad)


def table_problems(group: zarr.Group, path: Path, top: bool) -> list[str]:
    """Every problem an open finds cheaply: attributes, arrays, chunk files below rows_committed."""
    attrs = dict(group.attrs)
    problems = attribute_problems(attrs, top) + array_problems(group, attrs)
    if not problems:
        rows = attrs["rows_committed"]
        problems += [
            f"chunk {key} (rows from {first}) is missing or truncated"
            for first, key in missing_chunks(group, path, rows)
        ]
    return problems


class CodeStore:
    """Read-only view of one table: the store root or its `queries` subgroup.

    `len(store)` is `rows_committed`; every accessor returns committed rows only.
    """

    def __init__(
        self, group: zarr.Group, path: Path, store_path: Path, classes: list[str] | None = None
    ):
        self.group = group
        self.path = path
        self.store_path = store_path  # the top folder: relative roots are relative to it
        self.attrs = dict(group.attrs)
        self._classes = classes
        self._verified: set[tuple[str, int]] = set()  # (array, chunk) checked against checksums

    def __len__(self) -> int:
        return int(self.attrs.get("rows_committed", 0))

    @property
    def bits(self) -> int:
        return int(self.attrs["bits"])

    @property
    def root(self) -> Path:
        """The folder that `paths` are relative to (absolute)."""
        return resolve_root(self.store_path, self.attrs["root"])

    @property
    def classes(self) -> list[str]:
        """Class names; `labels` index into this list (shared by the store and its queries)."""
        return list(self._classes if self._classes is not None else self.attrs.get("classes", []))

    def read(self, name: str, start: int = 0, stop: int | None = None, rows=None) -> np.ndarray:
        """Committed rows [start, stop) (or sorted unique `rows`) of array `name`.

        Each chunk read is checked once per CodeStore against the checksum of its committed rows
        recorded at commit (checksums.py; zarr's crc32c codec checks its bytes on every read):
        a chunk that does not decode or does not match is a `StoreDamaged` error naming it.
        """
        stop = len(self) if stop is None else min(stop, len(self))
        array = self.group[name]
        lo, hi = (int(rows[0]), int(rows[-1]) + 1) if rows is not None else (start, stop)
        try:
            if rows is not None:
                for k in np.unique(np.asarray(rows) // array.chunks[0]).tolist():
                    self._verify(name, array, k)
                return array.oindex[rows]
            step = array.chunks[0]
            first = start - start % step
            block = np.asarray(array[first : min(-(-stop // step) * step, len(self))])
            for k in range(first // step, -(-stop // step)):
                self._verify(name, array, k, block[k * step - first : (k + 1) * step - first])
            return block[start - first : stop - first]
        except DECODE_ERRORS as exc:
            keys = ", ".join(f"{name}/{key}" for _, key in chunk_keys(array, lo, hi))
            raise damaged(self.path, f"chunk {keys} {unreadable(exc)}") from None

    def _verify(self, name: str, array: zarr.Array, k: int, values=None) -> None:
        """Check chunk k of array `name` (its committed rows `values`, read if None) against the
        table's checksum list, once."""
        sums = self.attrs.get(CHECKSUMS)
        if sums is None or (name, k) in self._verified:
            return
        step = array.chunks[0]
        if values is None:
            values = array[k * step : min((k + 1) * step, len(self))]
        if chunk_sum(name, values) != sums[name][k]:
            key = chunk_keys(array, k * step, k * step + 1)[0][1]
            raise damaged(
                self.path, f"chunk {name}/{key} does not match the checksum of its committed rows"
            )
        self._verified.add((name, k))

    def read_codes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Packed codes uint8 [stop - start, bits / 8] of committed rows [start, stop)."""
        return self.read("codes", start, stop)

    def codes(self) -> Iterator[tuple[int, np.ndarray]]:
        """Committed codes chunk by chunk: (first row, uint8 [rows, bits / 8]), in row order."""
        step = self.group["codes"].chunks[0]
        for start in range(0, len(self), step):
            yield start, self.read_codes(start, start + step)

    @property
    def paths(self) -> np.ndarray:
        """Stored relative paths [N] (numpy StringDType, escaped: `decode_name` gives the file
        name; `names` does it for some rows)."""
        return self.read("paths")

    @property
    def labels(self) -> np.ndarray:
        """Int32 labels [N]; -1 where an image had no class folder."""
        return self.read("labels")

    def names(self, ids: np.ndarray) -> list[str]:
        """File names (relative to `root`, surrogateescape str) of committed rows `ids` [k]."""
        return self.lookup(ids)[0]

    def lookup(self, ids: np.ndarray) -> tuple[list[str], list[str | None]]:
        """File names and class names (None without a label) of committed rows `ids` [k]."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return [], []
        if ids.min() < 0 or ids.max() >= len(self):
            raise IndexError(f"rows {ids} outside the {len(self)} committed rows")
        rows, inverse = np.unique(ids, return_inverse=True)  # zarr wants sorted, unique rows
        paths = [decode_name(p) for p in self.read("paths", rows=rows)[inverse].tolist()]
        classes, found = self.classes, self.read("labels", rows=rows)
        if len(found) and found.max() >= len(classes):
            raise damaged(self.path, f"a label is {found.max()} but classes lists {len(classes)}")
        labels = [classes[lab] if lab >= 0 else None for lab in found]
        return paths, [labels[j] for j in inverse]

    @property
    def queries(self) -> "CodeStore | None":
        """The query set recorded with `tbh index --query-images`, or None."""
        if not has_subgroup(self.group, QUERIES):
            return None
        where = self.path / QUERIES
        try:
            group = member(self.group, QUERIES)
        except StoreDamaged as exc:
            raise damaged(where, str(exc), self.path) from None
        if not isinstance(group, zarr.Group):
            raise damaged(where, "its zarr.json is missing or not a group's", self.path)
        _check(group, where, top=False, store=self.path)
        return CodeStore(group, self.path / QUERIES, self.store_path, self.classes)


def holds_rows(group: zarr.Group) -> bool:
    """Whether any array of a table has rows (or cannot be read): such a table is never one
    whose creation was interrupted, and is repaired, not created again."""
    arrays, problems = table_arrays(group)
    return any(a.shape and a.shape[0] for a in arrays.values()) or any(
        "missing" not in p for p in problems
    )


def open_group(path: Path, mode: str) -> zarr.Group:
    """The zarr group of a tbh store (any format_version 1 group, whatever its state)."""
    try:
        group = zarr.open_group(path, mode=mode, zarr_format=3)
    except PermissionError as exc:
        raise TbhError(f"cannot open the code store {path}: {exc.strerror}.") from None
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise TbhError(
            f"{path} is not a zarr v3 code store ({exc}); build one with `tbh index`."
        ) from None
    if group.attrs.get("format_version") != FORMAT_VERSION:
        raise TbhError(
            f"{path} is not a tbh code store of format {FORMAT_VERSION}; "
            "pass another --store or rebuild it with `tbh index`."
        )
    return group


def _check(group: zarr.Group, path: Path, top: bool, store: Path | None = None) -> None:
    problems = table_problems(group, path, top)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise damaged(path, problems[0] + more, store)


def open_store(path: str | Path) -> CodeStore:
    """Open an existing store read-only; a damaged one is a `StoreDamaged` error."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise TbhError(f"no code store at {path}; build one with `tbh index IMAGES_DIR`.")
    group = open_group(path, "r")
    if "rows_committed" not in group.attrs:
        if holds_rows(group):
            raise damaged(path, "rows_committed is missing")
        raise TbhError(f"the creation of store {path} was interrupted; rerun `tbh index`.")
    _check(group, path, top=True)
    return CodeStore(group, path, path)
