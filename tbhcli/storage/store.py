"""The code store `codes.zarr`: packed codes, paths and labels of indexed images in a zarr v3 group.

Layout (docs/store.md): arrays `codes` uint8 [N, bits/8] (uncompressed, row-chunked), `paths`
str [N] (relative to the table's `root`), `labels` int32 [N] (-1 = none, else an index into the
root's `classes`), and group attributes. An optional subgroup `queries` holds the query set with
the same arrays. Only rows [0, rows_committed) of a table are valid.

Crash safety: rows are appended by growing the arrays, writing the rows, fsync-ing the chunk files,
and only then bumping `rows_committed` in the group's zarr.json (zarr writes every file through a
temporary file + rename, so no file is ever half-written). A kill at any point leaves the committed
rows intact; the next writer truncates the arrays back to `rows_committed` and appends from there.
"""

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr

import tbhcli
from tbhcli.errors import TbhError

FORMAT_VERSION = 1
QUERIES = "queries"
CODE_CHUNK_BYTES = 1 << 20  # append rewrites the last chunk, so keep chunks small
PATH_CHUNK_ROWS = 16384
_ARRAYS = ("codes", "paths", "labels")

try:  # an advisory lock keeps two writers off one store; the OS drops it when a process dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def code_chunk_rows(bits: int) -> int:
    """Rows per `codes` chunk: a power of two (>= 1024) of about `CODE_CHUNK_BYTES` of codes."""
    return 1 << max(10, (CODE_CHUNK_BYTES // (bits // 8)).bit_length() - 1)


class CodeStore:
    """Read-only view of one table: the store root or its `queries` subgroup.

    `len(store)` is `rows_committed`; every accessor returns committed rows only.
    """

    def __init__(self, group: zarr.Group, path: Path, classes: list[str] | None = None):
        self.group = group
        self.path = path
        self.attrs = dict(group.attrs)
        self._classes = classes

    def __len__(self) -> int:
        return int(self.attrs.get("rows_committed", 0))

    @property
    def bits(self) -> int:
        return int(self.attrs["bits"])

    @property
    def root(self) -> Path:
        """The folder that `paths` are relative to."""
        return Path(self.attrs["root"])

    @property
    def classes(self) -> list[str]:
        """Class names; `labels` index into this list (shared by the store and its queries)."""
        return list(self._classes if self._classes is not None else self.attrs.get("classes", []))

    def read_codes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Packed codes uint8 [stop - start, bits / 8] of committed rows [start, stop)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return self.group["codes"][start:stop]

    def codes(self) -> Iterator[tuple[int, np.ndarray]]:
        """Committed codes chunk by chunk: (first row, uint8 [rows, bits / 8]), in row order."""
        step = self.group["codes"].chunks[0]
        for start in range(0, len(self), step):
            yield start, self.read_codes(start, start + step)

    @property
    def paths(self) -> np.ndarray:
        """Relative paths [N] (numpy StringDType; `.tolist()` gives Python strings)."""
        return self.group["paths"][: len(self)]

    @property
    def labels(self) -> np.ndarray:
        """Int32 labels [N]; -1 where an image had no class folder."""
        return self.group["labels"][: len(self)]

    def lookup(self, ids: np.ndarray) -> tuple[list[str], list[str | None]]:
        """Paths and class names (None without a label) of committed rows `ids` [k]."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return [], []
        if ids.min() < 0 or ids.max() >= len(self):
            raise IndexError(f"rows {ids} outside the {len(self)} committed rows")
        rows, inverse = np.unique(ids, return_inverse=True)  # zarr wants sorted, unique rows
        paths = self.group["paths"].oindex[rows][inverse].tolist()
        classes = self.classes
        labels = [classes[lab] if lab >= 0 else None for lab in self.group["labels"].oindex[rows]]
        return paths, [labels[j] for j in inverse]

    @property
    def queries(self) -> "CodeStore | None":
        """The query set recorded with `tbh index --query-images`, or None."""
        if QUERIES not in self.group.group_keys():
            return None
        return CodeStore(self.group[QUERIES], self.path / QUERIES, self.classes)


def _open_group(path: Path, mode: str) -> zarr.Group:
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


def open_store(path: str | Path) -> CodeStore:
    """Open an existing store read-only."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise TbhError(f"no code store at {path}; build one with `tbh index IMAGES_DIR`.")
    group = _open_group(path, "r")
    if "rows_committed" not in group.attrs:
        raise TbhError(f"the creation of store {path} was interrupted; rerun `tbh index`.")
    return CodeStore(group, path)


class StoreWriter:
    """Appends rows to one table of a store; each `append` is committed atomically."""

    def __init__(self, group: zarr.Group, path: Path, top: zarr.Group):
        self.group = group
        self.path = path
        self.top = top  # the root group, which owns `classes`
        self._truncate()

    def __len__(self) -> int:
        return int(self.group.attrs["rows_committed"])

    def _truncate(self) -> None:
        """Drop rows an interrupted run left beyond `rows_committed`, and its temporary files."""
        n = len(self)
        for name in _ARRAYS:
            array = self.group[name]
            if array.shape[0] != n:
                array.resize((n, *array.shape[1:]))
        for leftover in self.path.rglob("*.partial"):
            leftover.unlink(missing_ok=True)

    def committed_paths(self) -> set[str]:
        return set(self.group["paths"][: len(self)].tolist())

    def label_ids(self, names: list[str | None]) -> np.ndarray:
        """Int32 labels [N] for class names (None -> -1), appending unseen names to `classes`."""
        classes = list(self.top.attrs.get("classes", []))
        new = sorted({n for n in names if n is not None} - set(classes))
        if new:
            classes += new
            self.top.attrs["classes"] = classes
        index = {c: i for i, c in enumerate(classes)}
        return np.array([-1 if n is None else index[n] for n in names], dtype=np.int32)

    def append(self, codes: np.ndarray, paths: list[str], labels: np.ndarray) -> None:
        """Write rows: codes uint8 [B, bits / 8], relative paths [B], labels int32 [B]; commit."""
        if not len(paths):
            return
        start = len(self)
        stop = start + len(paths)
        values = {
            "codes": codes,
            "paths": np.array(paths, dtype=object),
            "labels": np.asarray(labels, np.int32),
        }
        for name, value in values.items():
            array = self.group[name]
            array.resize((stop, *array.shape[1:]))
            array[start:stop] = value
        self._sync(start, stop)
        # The commit point: only now do readers and a resumed run see the new rows.
        self.group.attrs.update({"rows_committed": stop, "updated": _now()})

    def _sync(self, start: int, stop: int) -> None:
        """fsync the chunk files of rows [start, stop), so the commit never outruns the data."""
        for name in _ARRAYS:
            array = self.group[name]
            step = array.chunks[0]
            for chunk in range(start // step, (stop - 1) // step + 1):
                key = "/".join(["c", str(chunk)] + ["0"] * (array.ndim - 1))
                file = self.path / name / key
                if file.is_file():  # an all-fill-value chunk is not stored
                    fd = os.open(file, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)


def _create_table(group: zarr.Group, bits: int, attrs: dict) -> None:
    """Create the three empty arrays, then the attributes: a table without `rows_committed`
    is one whose creation was interrupted, and is created again."""
    nbytes = bits // 8
    group.create_array(
        "codes",
        shape=(0, nbytes),
        chunks=(code_chunk_rows(bits), nbytes),
        dtype="uint8",
        compressors=None,
        fill_value=0,
    )
    group.create_array("paths", shape=(0,), chunks=(PATH_CHUNK_ROWS,), dtype=str)
    group.create_array(
        "labels", shape=(0,), chunks=(PATH_CHUNK_ROWS,), dtype="int32", fill_value=-1
    )
    group.attrs.update(attrs | {"rows_committed": 0})


class StoreLock:
    """Exclusive writer lock on the store folder itself; released on exit or when the process dies.

    Locking the folder (not a file in it) keeps the zarr hierarchy free of foreign files.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "StoreLock":
        if self.path.exists() and not self.path.is_dir():
            raise TbhError(f"{self.path} is a file, not a code store; pass another --store.")
        self.path.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDONLY)
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.fd)
                raise TbhError(
                    f"another `tbh index` is writing to {self.path}; wait for it or pass --store."
                ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock


def open_writer(
    path: str | Path,
    *,
    bits: int,
    model_sha256: str,
    model: str,
    backbone: str,
    image_size: int,
    root: Path,
    table: str | None = None,
) -> StoreWriter:
    """Create or reopen a store for appending to its root table or to subgroup `table`.

    Refuses a store made by another model (its codes would not be comparable) and a table that
    was filled from another folder (its relative paths would be ambiguous). Hold a `StoreLock`.
    """
    path = Path(path)
    root = str(Path(root).resolve())
    top = _open_group(path, "r+") if (path / "zarr.json").is_file() else None
    if top is not None and "rows_committed" in top.attrs:
        if top.attrs["model_sha256"] != model_sha256:
            raise TbhError(
                f"store {path} was built with another model ({top.attrs.get('model')}, "
                f"sha256 {top.attrs['model_sha256'][:12]}...); pass another --store, "
                f"or --model with that file."
            )
    elif top is None and path.exists() and any(path.iterdir()):
        raise TbhError(f"{path} exists and is not a code store; pass another --store.")
    else:  # a new store, or one whose creation was interrupted (no rows_committed yet)
        top = zarr.open_group(
            path, mode="w", zarr_format=3, attributes={"format_version": FORMAT_VERSION}
        )
        now = _now()
        attrs = {
            "format_version": FORMAT_VERSION,
            "bits": bits,
            "model_sha256": model_sha256,
            "model": model,
            "backbone": backbone,
            "image_size": image_size,
            "root": root,
            "classes": [],
            "created": now,
            "updated": now,
            "tbh_version": tbhcli.__version__,
        }
        _create_table(top, bits, attrs)
    group = top
    if table is not None:
        if table not in top.group_keys() or "rows_committed" not in top[table].attrs:
            group = top.create_group(table, overwrite=True)
            _create_table(group, bits, {"bits": bits, "root": root, "created": _now()})
        group = top[table]
    if group.attrs["root"] != root:
        where = f"{path}/{table}" if table else str(path)
        raise TbhError(
            f"{where} holds images from {group.attrs['root']}, not {root}; "
            "pass another --store to index a different folder."
        )
    return StoreWriter(group, path / table if table else path, top)
