"""The write side of the code store: the writer lock, creating a table, atomic appends.

Crash safety: rows are appended by growing the arrays, writing the rows, fsync-ing the chunk files,
and only then bumping `rows_committed` in the group's zarr.json (zarr writes every file through a
temporary file + rename, so no file is ever half-written). A kill at any point leaves the committed
rows intact; the next writer truncates the arrays back to `rows_committed` and appends from there.

Concurrency: a writer holds `StoreLock`, an flock on `.NAME.lock` beside the store folder. The lock
file lives outside the folder, so it also covers creating the store (which clears the folder) and
swapping in a rebuilt one (`tbh remove`); it is never deleted, so two writers always lock the same
file. A full disk or a read-only store ends in one line that says how many rows are committed.
"""

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr

import tbhcli
from tbhcli.errors import TbhError
from tbhcli.storage.checksums import CHECKSUMS, CRC32C, appended
from tbhcli.storage.names import decode_name, encode_name
from tbhcli.storage.store import (
    ARRAYS,
    DECODE_ERRORS,
    EVERY_CHUNK,
    FORMAT_VERSION,
    PATH_CHUNK_ROWS,
    CodeStore,
    chunk_keys,
    code_chunk_rows,
    damaged,
    has_subgroup,
    holds_rows,
    member,
    open_group,
    resolve_root,
    table_arrays,
    table_problems,
    unreadable,
)

try:  # an advisory lock keeps two writers off one store; the OS drops it when a process dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# What each array holds, for readers such as xarray (`xr.open_zarr`) that show attributes.
ARRAY_ATTRS = {
    "codes": {
        "long_name": "packed binary codes",
        "description": "np.packbits of the code bits, bit j in byte j // 8 under mask 128 >> j % 8",
    },
    "paths": {
        "long_name": "image path relative to the table's root",
        "description": "UTF-8; a byte that is not UTF-8 is stored as NUL + two hex digits",
    },
    "labels": {
        "long_name": "class label",
        "description": "index into the root group's classes attribute; -1 = no class folder",
    },
}
DIMENSIONS = {"codes": ("row", "byte"), "paths": ("row",), "labels": ("row",)}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def write_errors(path: Path, committed) -> Iterator[None]:
    """Turn a full disk or a read-only store into one line; `committed()` -> rows kept."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_SPACE + _NO_WRITE:
            raise
        rows = committed()
        state = "unchanged" if rows is None else f"still consistent at {rows} committed rows"
        fix = "free some space" if exc.errno in _NO_SPACE else "make it writable"
        raise TbhError(
            f"cannot write to store {path}: {exc.strerror}; the store is {state}. "
            f"{fix.capitalize()} and rerun the same command to continue."
        ) from None


def lock_path(path: Path) -> Path:
    """`.NAME.lock` beside the store folder NAME."""
    return path.parent / f".{path.name}.lock"


def swap_paths(path: Path) -> tuple[Path, Path]:
    """(rebuilt store, old store) folders beside `path` while `tbh remove` swaps them."""
    return path.parent / f".{path.name}.new", path.parent / f".{path.name}.old"


def finish_swap(path: Path) -> None:
    """Complete or undo a swap that a killed `tbh remove` left half done (hold the lock)."""
    new, old = swap_paths(path)
    if not path.exists() and old.exists():  # killed between the two renames
        os.rename(new if (new / "zarr.json").is_file() else old, path)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(new, ignore_errors=True)


@contextmanager
def rebuilt_copy(path: Path, backup: Path | None = None) -> Iterator[Path]:
    """Yield a copy of the store to change (`.NAME.new`), then swap it in (hold the lock).

    A failure before the swap removes the copy and leaves the store untouched; a kill between
    the two renames is completed by the next writer (`finish_swap`). `backup`: a folder that
    keeps every zarr.json of the replaced store (the metadata a repair rewrites).
    """
    new, old = swap_paths(path)
    try:
        try:
            shutil.copytree(path, new)
        except shutil.Error as exc:  # one (source, target, why) per file it could not copy
            why = exc.args[0][0][2] if exc.args and exc.args[0] else str(exc)
            raise TbhError(
                f"cannot copy store {path} to rebuild it ({why}); the store is unchanged. "
                "Rebuilding needs free space of the store's size: free some and rerun."
            ) from None
        yield new
        os.sync()  # the copy is on disk before it replaces the store
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    if backup is not None:
        for meta in path.rglob("zarr.json"):
            target = backup / meta.relative_to(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(meta, target)
    os.rename(path, old)
    os.rename(new, path)
    shutil.rmtree(old)


class StoreLock:
    """Exclusive writer lock of a store (module doc); released on exit or when the process dies.

    The lock is taken on the real folder (symlinks resolved), so two names of one store share it.
    """

    def __init__(self, path: Path):
        path = Path(path)
        if path.is_symlink() and not path.exists():
            raise TbhError(f"{path} is a link to {os.readlink(path)}, which does not exist.")
        self.path = path.resolve()
        self.fd: int | None = None

    def __enter__(self) -> "StoreLock":
        if self.path.exists() and not self.path.is_dir():
            raise TbhError(f"{self.path} is a file, not a code store; pass another --store.")
        with write_errors(self.path, lambda: None):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.fd)
                self.fd = None
                raise TbhError(
                    f"another tbh command is writing to {self.path}; wait for it or pass --store."
                ) from None
        with write_errors(self.path, lambda: None):
            finish_swap(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def writable(array: zarr.Array) -> zarr.Array:
    """`array` set to store every chunk, also one equal to the fill value (see EVERY_CHUNK)."""
    return array.with_config({"write_empty_chunks": True})


def create_table(group: zarr.Group, bits: int, attrs: dict) -> None:
    """Create the three empty arrays, then the attributes: a table without `rows_committed`
    is one whose creation was interrupted, and is created again."""
    for name, spec in array_specs(bits).items():
        if (Path(group.store.root, group.path, name)).exists():
            del group[name]
        group.create_array(
            name, dimension_names=DIMENSIONS[name], attributes=ARRAY_ATTRS[name], **spec
        )
    empty = {name: [] for name in ARRAYS}
    group.attrs.update(attrs | {"rows_committed": 0, EVERY_CHUNK: True, CHECKSUMS: empty})


def array_specs(bits: int, checksums: bool = True) -> dict[str, dict]:
    """How each array of a table is created (`create_array` arguments); `checksums`: with the
    crc32c codec (checksums.py), False for stores written before it."""
    nbytes, crc = bits // 8, [CRC32C] if checksums else []
    zstd = zarr.codecs.ZstdCodec(level=0, checksum=False)
    return {
        "codes": dict(
            shape=(0, nbytes),
            chunks=(code_chunk_rows(bits), nbytes),
            dtype="uint8",
            compressors=crc or None,
            fill_value=0,
        ),
        "paths": dict(shape=(0,), chunks=(PATH_CHUNK_ROWS,), dtype=str, compressors=[zstd, *crc]),
        "labels": dict(
            shape=(0,),
            chunks=(PATH_CHUNK_ROWS,),
            dtype="int32",
            fill_value=-1,
            compressors=[zstd, *crc],
        ),
    }


class StoreWriter:
    """Appends rows to one table of a store; each `append` is committed atomically."""

    def __init__(self, group: zarr.Group, path: Path, top: zarr.Group):
        self.group = group
        self.path = path
        self.top = top  # the root group, which owns `classes`
        self.rows = int(group.attrs["rows_committed"])  # changes only once a commit is on disk
        self.arrays = {name: writable(group[name]) for name in ARRAYS}
        with self.errors():
            self._truncate()

    def __len__(self) -> int:
        return self.rows

    def errors(self):
        """Context: a full disk or read-only store is one line with the committed row count."""
        return write_errors(self.path, lambda: self.rows)

    def _truncate(self) -> None:
        """Drop rows an interrupted run left beyond `rows_committed`, and its temporary files."""
        for array in self.arrays.values():
            if array.shape[0] != self.rows:
                array.resize((self.rows, *array.shape[1:]))
        for leftover in self.path.rglob("*.partial"):
            leftover.unlink(missing_ok=True)

    def committed_paths(self) -> set[str]:
        """Stored (escaped) paths of the committed rows (a chunk that does not decode is
        `StoreDamaged`)."""
        view = CodeStore(self.group, self.path, self.path)
        return set(view.read("paths", 0, self.rows).tolist())

    def label_ids(self, names: list[str | None]) -> np.ndarray:
        """Int32 labels [N] for class names (None -> -1), appending unseen names to `classes`."""
        classes = list(self.top.attrs.get("classes", []))
        new = sorted({n for n in names if n is not None} - set(classes))
        if new:
            classes += new
            with self.errors():
                self.top.attrs["classes"] = classes
        index = {c: i for i, c in enumerate(classes)}
        return np.array([-1 if n is None else index[n] for n in names], dtype=np.int32)

    def append(self, codes: np.ndarray, paths: list[str], labels: np.ndarray) -> None:
        """Write rows: codes uint8 [B, bits / 8], relative paths [B] (file names as Python lists
        them; escaped here), labels int32 [B]; commit."""
        if not len(paths):
            return
        start, stop = self.rows, self.rows + len(paths)
        values = {
            "codes": codes,
            "paths": np.array([encode_name(p) for p in paths], dtype=object),
            "labels": np.asarray(labels, np.int32),
        }
        sums = self.group.attrs.get(CHECKSUMS)
        with self.errors():
            for name, value in values.items():
                array = self.arrays[name]
                if sums is not None:
                    sums[name] = appended(sums[name], name, array.chunks[0], start, value)
                array.resize((stop, *array.shape[1:]))
                try:  # the last chunk is read, merged with the new rows and written whole
                    array[start:stop] = value
                except DECODE_ERRORS as exc:
                    key = chunk_keys(array, start, start + 1)[0][1]
                    raise damaged(self.path, f"chunk {name}/{key} {unreadable(exc)}") from None
            self._sync(start, stop)
            # The commit point: only now do readers and a resumed run see the new rows.
            commit = {"rows_committed": stop, "updated": _now()}
            self.group.attrs.update(commit | ({CHECKSUMS: sums} if sums is not None else {}))
        self.rows = stop

    def _sync(self, start: int, stop: int) -> None:
        """fsync the chunk files of rows [start, stop), so the commit never outruns the data."""
        for name, array in self.arrays.items():
            for _, key in chunk_keys(array, start, stop):
                fd = os.open(self.path / name / key, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def stored_root(store: Path, folder: Path) -> str:
    """The `root` attribute for `folder`: relative to the store folder when both lie in the
    store's parent (the workspace), so a moved or copied workspace keeps working; else absolute."""
    folder, home = Path(folder).resolve(), Path(store).absolute().parent.resolve()
    if folder.is_relative_to(home):
        return os.path.relpath(folder, home / Path(store).name)
    return str(folder)


def _is_new(path: Path, top: zarr.Group | None) -> bool:
    """A store to create: none yet, or one whose creation was interrupted (no rows committed,
    attributes or arrays missing)."""
    if top is None:
        if path.exists() and any(path.iterdir()):
            raise TbhError(f"{path} exists and is not a code store; pass another --store.")
        return True
    if holds_rows(top):  # never created again: its rows are repaired, not dropped
        return False
    if "rows_committed" not in top.attrs:  # (a null value is damage, not a new store)
        return True
    return top.attrs["rows_committed"] == 0 and len(table_arrays(top)[0]) < len(ARRAYS)


def _open_table(
    top: zarr.Group, path: Path, table: str | None, bits: int, root: str, repoint: bool
) -> zarr.Group:
    """The table's group, created when new; refuses a damaged one and one of another folder."""
    group = top
    if table is not None:
        if not has_subgroup(top, table) or _is_new(path / table, member(top, table)):
            group = top.create_group(table, overwrite=True)
            create_table(group, bits, {"bits": bits, "root": root, "created": _now()})
        group = top[table]
    where = path / table if table else path
    problems = table_problems(group, where, top=table is None)
    if problems:
        raise damaged(where, problems[0])
    if group.attrs["bits"] != bits:
        raise TbhError(f"{where} holds {group.attrs['bits']}-bit codes, not {bits}-bit.")
    stored = group.attrs["root"]
    old, new = resolve_root(path, stored).resolve(), resolve_root(path, root).resolve()
    if old != new:
        if not repoint:
            raise TbhError(
                f"{where} holds images from {old}, not {new}; pass another --store to index a "
                "different folder, or --root if the folder was moved."
            )
        _check_moved(group, new)
        group.attrs["root"] = root
    elif stored != root:  # same folder, recorded the old (absolute) way: make it relocatable
        group.attrs["root"] = root
    return group


def _check_moved(group: zarr.Group, folder: Path, sample: int = 50) -> None:
    """Refuse to re-point a table at a folder that holds none of its first `sample` files."""
    rows = group.attrs["rows_committed"]
    names = [decode_name(p) for p in group["paths"][: min(rows, sample)].tolist()]
    if names and not any((folder / name).exists() for name in names):
        raise TbhError(
            f"{folder} holds none of the first {len(names)} indexed files (such as "
            f"{names[0]!r}); pass the folder they were moved to."
        )


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
    repoint: bool = False,
) -> StoreWriter:
    """Create or reopen a store for appending to its root table or to subgroup `table`.

    Refuses a store made by another model (its codes would not be comparable), a damaged one,
    and a table that was filled from another folder (its relative paths would be ambiguous)
    unless `repoint` (the folder moved: the table's root becomes `root`). Hold a `StoreLock`.
    """
    path = Path(path)
    root_attr = stored_root(path, root)
    top = open_group(path, "r+") if (path / "zarr.json").is_file() else None
    with write_errors(path, lambda: None if top is None else top.attrs.get("rows_committed")):
        if _is_new(path, top):
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
                "root": root_attr,
                "classes": [],
                "created": now,
                "updated": now,
                "tbh_version": tbhcli.__version__,
            }
            create_table(top, bits, attrs)
        elif top.attrs.get("model_sha256") != model_sha256:
            raise TbhError(
                f"store {path} was built with another model ({top.attrs.get('model')}, "
                f"sha256 {str(top.attrs.get('model_sha256'))[:12]}...); pass another --store, "
                f"or --model with that file."
            )
        group = _open_table(top, path, table, bits, root_attr, repoint)
    return StoreWriter(group, path / table if table else path, top)
