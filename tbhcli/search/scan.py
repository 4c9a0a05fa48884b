"""The scan: a database read in blocks, each searched through the in-memory block engines.

A database is packed uint8 codes [N, bits/8] as a NumPy array, a zarr array, an open
`CodeStore`, or the path of a code store (`codes.zarr`); `CodeSource` reads a store in blocks of
about `BLOCK_BYTES` (the next block is read while the current one is searched), never all at
once. `scan_topk` and `scan_radius` fold the blocks' results (`tbhcli.hamming.blocks`) into what
one pass over all rows gives, ties by row. Which engine answers a search (this scan, the
multi-index, a Dask cluster) is decided by `tbhcli.search.api`. `topk_reference` and
`radius_reference` are the slow, obvious NumPy definitions every path must match.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.hamming.blocks import (
    as_words,
    block_radius,
    block_topk,
    check_codes,
    code_bits,
    merge_into,
    split_csr,
)

BLOCK_BYTES = 64 << 20  # codes read from a store per step: bounds memory, amortises the reads


# ---- inputs ----------------------------------------------------------------------------------


class CodeSource:
    """Rows [0, n_rows) of a database, read in blocks of whole chunks."""

    def __init__(self, database):
        self.store_path = None
        self._read = None
        self.store = None  # the open CodeStore, when the database is one
        if isinstance(database, np.ndarray):
            self.array = check_codes(database, "the database")
            self.block_rows = max(1, len(self.array))
            self.n_rows, self.n_bytes = self.array.shape
            return
        if isinstance(database, str | Path):
            from tbhcli.storage.store import open_store

            database = open_store(database)
        if hasattr(database, "read_codes"):  # a CodeStore: committed rows only
            self.store = database
            self.store_path = Path(database.path)
            self.n_rows = len(database)
            self.array = database.group["codes"]
            self._read = database.read_codes  # a damaged chunk is a clear error, never zeros
        else:  # a zarr array: all of it
            self.array = database
            self.n_rows = database.shape[0]
        if self.array.dtype != np.uint8 or self.array.ndim != 2:
            raise TbhError(
                f"the codes array is {self.array.dtype} {self.array.shape}, not uint8 [N, bits/8]."
            )
        self.n_bytes = self.array.shape[1]
        chunk_rows = self.array.chunks[0]
        self.block_rows = chunk_rows * max(1, BLOCK_BYTES // max(1, chunk_rows * self.n_bytes))

    def ranges(self, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
        """Blocks of rows [start, stop) (default: all), cut at multiples of block_rows."""
        stop = self.n_rows if stop is None else stop
        first = start - start % self.block_rows
        return [
            (max(s, start), min(s + self.block_rows, stop))
            for s in range(first, stop, self.block_rows)
        ]

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._read is not None:
            return self._read(start, stop)
        return np.asarray(self.array[start:stop])

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, uint8 [rows, B]) of rows [start, stop) in row order; the next block is
        read during the search."""
        with ThreadPoolExecutor(1) as reader:
            ranges = self.ranges(start, stop)
            pending = reader.submit(self.read, *ranges[0]) if ranges else None
            for i, (start, _) in enumerate(ranges):
                block = pending.result()
                if i + 1 < len(ranges):
                    pending = reader.submit(self.read, *ranges[i + 1])
                yield start, block


def open_search(database, queries: np.ndarray) -> tuple[CodeSource, np.ndarray]:
    """Validate a search: a non-empty database, queries of the same width -> (source, words)."""
    source = CodeSource(database)
    queries = check_codes(queries, "the queries")
    if queries.shape[1] != source.n_bytes:
        raise TbhError(
            f"the queries have {queries.shape[1] * 8}-bit codes but the database has "
            f"{source.n_bytes * 8}-bit codes; encode both with the same model."
        )
    if source.n_rows == 0:
        raise TbhError("the database is empty; index some images with `tbh index` first.")
    return source, as_words(queries)


def check_k(k: int, n_rows: int) -> int:
    """k clamped to the database size (as a result cannot hold more rows than exist)."""
    if k < 1:
        raise TbhError(f"k must be at least 1 (got {k}).")
    return min(int(k), n_rows)


# ---- scans ------------------------------------------------------------------------------------


def scan_topk(
    source: CodeSource, query_words: np.ndarray, k: int, n_threads: int, start: int = 0, stop=None
):
    """Top-k by scanning rows [start, stop) of a source block by block (padded as block_topk)."""
    best = None
    for first, block in source.blocks(start, stop):
        parts = block_topk(as_words(block), query_words, k, first, n_threads)
        best = merge_into(best, parts, k, code_bits(query_words))
    return best


def scan_radius(source: CodeSource, query_words: np.ndarray, radius: int, n_threads: int):
    """Every row of a source within `radius` of each query: one (dists, ids) pair per query."""
    pieces = [
        block_radius(as_words(block), query_words, radius, first, n_threads)
        for first, block in source.blocks()
    ]
    return split_csr(pieces)


# ---- references --------------------------------------------------------------------------------


def _all_distances(database, queries: np.ndarray) -> np.ndarray:
    """Hamming distances [Q, N] by NumPy broadcasting: the obvious definition."""
    source, _ = open_search(database, queries)
    codes = source.read(0, source.n_rows)
    return np.bitwise_count(queries[:, None, :] ^ codes[None, :, :]).sum(axis=2)


def topk_reference(database, queries: np.ndarray, k: int):
    """Slow NumPy `topk`: a stable sort of all distances, so ties keep the row order."""
    distances = _all_distances(database, queries)
    k = check_k(k, distances.shape[1])
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1).astype(np.int32), order.astype(np.int64)


def radius_reference(database, queries: np.ndarray, radius: int):
    """Slow NumPy `radius_search`."""
    results = []
    for row in _all_distances(database, queries):
        order = np.argsort(row, kind="stable")
        order = order[row[order] <= radius]
        results.append((row[order].astype(np.int32), order.astype(np.int64)))
    return results
