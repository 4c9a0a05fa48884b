"""`tbhcli.open_store(path)`: a code store as one Python object, for notebooks.

`len(store)` rows, `store.search(codes | images, k)` the nearest rows (as `tbh query` finds
them), `store.add(folder)` indexes images into it (`tbh index`), `store.remove()` drops the
rows whose files are gone (`tbh remove`). Each call opens the store afresh, so it sees what
other writers committed; the verbs do the work, this only holds the path.
"""

import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tbhcli.apps.query import (
    QueryResult,
    QueryResults,
    QuerySetup,
    check_search,
    query,
    search_codes,
)
from tbhcli.errors import TbhError
from tbhcli.indexing.index import IndexReport, index
from tbhcli.storage.prune import RemoveReport, remove
from tbhcli.storage.store import CodeStore
from tbhcli.storage.store import open_store as open_code_store
from tbhcli.workspace import STORE_PATH


class Store:
    """A code store (codes.zarr) and the verbs that read and change it (docs/usage.md has a
    notebook session: train, export, add, encode, search)."""

    def __init__(self, path: str | os.PathLike = STORE_PATH):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def open(self) -> CodeStore:
        """The store as it is committed now (validated; a damaged store is an error)."""
        if not self.path.exists():
            raise TbhError(f"no code store at {self.path}; add images with store.add(folder).")
        return open_code_store(self.path)

    def __len__(self) -> int:
        return len(self.open()) if self.path.exists() else 0

    def search(
        self, queries: np.ndarray | str | os.PathLike | Iterable, k: int = 10, **options
    ) -> QueryResults:
        """The `k` nearest rows of each query, nearest first (distance, then row).

        `queries`: packed codes uint8 [Q, bits/8] (`tbhcli.encode`), or image paths (a file, a
        folder, or a list), encoded with the store's own model. `options` go to `tbhcli.query`
        (`radius`, `model`, `device`, `method`, ...) for images; `radius` and `method` apply
        to codes too.
        """
        if k < 1:
            raise TbhError(f"k must be at least 1 (got {k}).")
        if not isinstance(queries, np.ndarray):
            return query(queries, top=k, store=self.path, **options)
        unknown = set(options) - {"radius", "method", "threads"}
        if unknown:
            raise TypeError(f"search() of codes takes radius, method, threads; got {unknown}.")
        check_search(k, options.get("radius"))
        began = time.perf_counter()
        db = self.open()
        found = search_codes(db, queries, k, **options)
        seconds = time.perf_counter() - began
        setup = QuerySetup(db.path, len(db), Path(db.attrs["model"]), "codes", db.bits, seconds)
        results = QueryResults()
        for row, (d, i) in enumerate(found):
            paths, labels = db.lookup(i)
            results.append(QueryResult(f"codes[{row}]", d, i, paths, labels, db.root, None, setup))
        return results

    def add(self, images: str | os.PathLike, model: str | Path | None = None, **options):
        """Index the images under the folder `images` into the store (created if need be);
        `options` go to `tbhcli.index`. Returns its `IndexReport`."""
        report: IndexReport = index(images, store=self.path, model=model, **options)
        return report

    def remove(self) -> RemoveReport:
        """Drop the rows whose files are gone (`tbhcli.remove`); returns what went."""
        return remove(self.path)


def open_store(path: str | os.PathLike = STORE_PATH) -> Store:
    """The code store at `path` (default ./codes.zarr) as a `Store`; it need not exist yet.

    >>> import tempfile, tbhcli
    >>> store = tbhcli.open_store(Path(tempfile.mkdtemp()) / "codes.zarr")
    >>> len(store), "search" in dir(store)
    (0, True)
    """
    return Store(path)
