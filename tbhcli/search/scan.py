"""Exact top-k and radius search by scanning: blocks of a database through the numba kernels.

`topk(database, queries, k)` returns what sorting every database row by (Hamming distance, row
index) gives, in faiss's argument and result order; `radius_search` returns every row within a
radius. `database` is packed uint8 codes [N, bits/8] as a NumPy array, a zarr array, an open
`CodeStore`, or the path of a code store (`codes.zarr`), which is read in blocks of about
`BLOCK_BYTES` (the next block is read while the current one is searched), never all at once.
With `dask="local"` or a scheduler address, the blocks of a store are searched on a Dask cluster
(`tbhcli.search.cluster`) and merged exactly as here. The kernels are in `tbhcli.search.kernels`;
`topk_reference` and `radius_reference` are the slow, obvious NumPy definitions they must match.
"""

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.search import kernels

BLOCK_BYTES = 64 << 20  # codes read from a store per step: bounds memory, amortises the reads
MAX_QUERY_BLOCK = 256  # queries sharing one pass over the database
BUFFER_BYTES = 32 << 20  # per query block: candidate buffers of (2k + TILE) x 12 bytes a query
MIN_PART_ROWS = 16384  # rows worth a task of their own


# ---- inputs ----------------------------------------------------------------------------------


def _check_codes(codes: np.ndarray, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise TbhError(
            f"{what} must be packed codes, uint8 [N, bits/8] (got {codes.dtype} {codes.shape}); "
            "pack 0/1 bits with tbhcli.hashing.codes.pack_bits."
        )
    return codes


def as_words(codes: np.ndarray) -> np.ndarray:
    """Packed uint8 [N, B] -> uint64 [N, B/8] (or uint32 [N, B/4]): same popcount, wider words.

    Widths that are not a multiple of 4 bytes are zero-padded (a copy); XOR of zeros adds nothing.
    """
    codes = np.ascontiguousarray(codes)
    n_bytes = codes.shape[1]
    if n_bytes % 8 == 0:
        return codes.view(np.uint64)
    if n_bytes % 4:
        padded = np.zeros((len(codes), n_bytes + 4 - n_bytes % 4), np.uint8)
        padded[:, :n_bytes] = codes
        codes = padded
    return codes.view(np.uint32)


class CodeSource:
    """Rows [0, n_rows) of a database, read in blocks of whole chunks."""

    def __init__(self, database):
        self.store_path = None
        self._read = None
        self.store = None  # the open CodeStore, when the database is one
        if isinstance(database, np.ndarray):
            self.array = _check_codes(database, "the database")
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


def _open(database, queries: np.ndarray) -> tuple[CodeSource, np.ndarray]:
    """Validate a search: a non-empty database, queries of the same width -> (source, words)."""
    source = CodeSource(database)
    queries = _check_codes(queries, "the queries")
    if queries.shape[1] != source.n_bytes:
        raise TbhError(
            f"the queries have {queries.shape[1] * 8}-bit codes but the database has "
            f"{source.n_bytes * 8}-bit codes; encode both with the same model."
        )
    if source.n_rows == 0:
        raise TbhError("the database is empty; index some images with `tbh index` first.")
    return source, as_words(queries)


def _check_k(k: int, n_rows: int) -> int:
    """k clamped to the database size (as a result cannot hold more rows than exist)."""
    if k < 1:
        raise TbhError(f"k must be at least 1 (got {k}).")
    return min(int(k), n_rows)


def check_threads(threads: int | None) -> int:
    """Worker threads for the kernels (they release the GIL): `threads`, or the usable cores."""
    if threads is not None and threads < 1:
        raise TbhError(f"--threads must be at least 1 (got {threads}).")
    return threads or len(os.sched_getaffinity(0))


def _parallel(run, tasks: list[tuple], n_threads: int) -> None:
    """run(*task) for every task on n_threads threads; exceptions propagate."""
    if n_threads == 1 or len(tasks) <= 1:
        for task in tasks:
            run(*task)
        return
    with ThreadPoolExecutor(min(n_threads, len(tasks))) as pool:
        for done in [pool.submit(run, *task) for task in tasks]:
            done.result()


def _tasks(n_queries: int, n_rows: int, k: int, n_threads: int) -> tuple[int, list[tuple]]:
    """Split a search into (query slice, part, first row, end row) tasks; return (parts, tasks).

    Queries go in even blocks of at most MAX_QUERY_BLOCK (fewer for a large k, so the candidate
    buffers fit BUFFER_BYTES); rows split into parts until there is a task per thread.
    """
    fit = BUFFER_BYTES // ((2 * k + kernels.TILE) * 12)
    n_blocks = max(1, -(-n_queries // max(1, min(MAX_QUERY_BLOCK, fit))))
    query_block = max(1, -(-n_queries // n_blocks))
    n_parts = max(1, min(-(-n_threads // n_blocks), n_rows // MIN_PART_ROWS))
    step = -(-n_rows // n_parts)
    tasks = [
        (slice(q0, q0 + query_block), start // step, start, min(start + step, n_rows))
        for q0 in range(0, n_queries, query_block)
        for start in range(0, n_rows, step)
    ]
    return n_parts, tasks


def _bits(words: np.ndarray) -> int:
    """Bits per code of words [N, W] (after any padding): distances lie in [0, bits]."""
    return words.shape[1] * words.itemsize * 8


# ---- top-k -------------------------------------------------------------------------------------


def block_topk(words: np.ndarray, query_words: np.ndarray, k: int, first_id: int, n_threads: int):
    """Top-k over one in-memory block of database words [n, W] whose rows start at first_id.

    Returns parts (dists int32, ids int64) [P, Q, k], each part sorted by (distance, row) and
    padded with distance bits + 1 and id -1 where it has fewer than k rows.
    """
    n_queries, bits = len(query_words), _bits(query_words)
    n_parts, tasks = _tasks(n_queries, len(words), k, n_threads)
    dists = np.full((n_parts, n_queries, k), bits + 1, np.int32)
    ids = np.full((n_parts, n_queries, k), -1, np.int64)

    def run(rows: slice, part: int, start: int, stop: int) -> None:
        kernels.scan_topk(
            words, query_words[rows], start, stop, k, first_id, dists[part, rows], ids[part, rows]
        )

    _parallel(run, tasks, n_threads)
    return dists, ids


def merge_into(best, parts, k: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold parts [P, Q, k] of rows after those of `best` into the running best [Q, k] (or None)."""
    dists, ids = parts
    if best is not None:
        dists = np.concatenate([best[0][None], dists])
        ids = np.concatenate([best[1][None], ids])
    out_dists = np.empty(dists.shape[1:], np.int32)
    out_ids = np.empty(dists.shape[1:], np.int64)
    kernels.merge_parts(dists, ids, k, bits, out_dists, out_ids)
    return out_dists, out_ids


def scan_topk(
    source: CodeSource, query_words: np.ndarray, k: int, n_threads: int, start: int = 0, stop=None
):
    """Top-k by scanning rows [start, stop) of a source block by block (padded as block_topk)."""
    best = None
    for first, block in source.blocks(start, stop):
        parts = block_topk(as_words(block), query_words, k, first, n_threads)
        best = merge_into(best, parts, k, _bits(query_words))
    return best


METHODS = ("auto", "scan", "mih")


def topk(
    database,
    queries: np.ndarray,
    k: int,
    threads: int | None = None,
    dask: str | None = None,
    method: str = "auto",
):
    """The k nearest database rows of each query by Hamming distance, ties to the lower row.

    database: packed uint8 [N, B] (array, zarr array, CodeStore or store path); queries: uint8
    [Q, B]. k larger than N is clamped to N. threads: search threads (default: the usable cores).
    dask: None, "local" or a scheduler address, to search a store's blocks on a Dask cluster.
    method: "scan", "mih" (multi-index hashing: a store's tables, or tables built on the fly for
    an array) or "auto" (the multi-index when the store has tables and it is measured to be
    cheaper for this batch, see `tbhcli.search.planner`). All three return the same result.
    Returns (distances int32 [Q, k], ids int64 [Q, k]), each row sorted by (distance, id).
    """
    if method not in METHODS:
        raise TbhError(f"method must be one of {', '.join(METHODS)} (got {method!r}).")
    source, query_words = _open(database, queries)
    k = _check_k(k, source.n_rows)
    if dask is not None:
        from tbhcli.search.cluster import dask_topk

        return dask_topk(source, query_words, k, _bits(query_words), dask, threads)
    n_threads = check_threads(threads)
    if method != "scan":
        from tbhcli.search.planner import multi_index_topk

        found = multi_index_topk(source, query_words, k, n_threads, method)
        if found is not None:
            return found
    return scan_topk(source, query_words, k, n_threads)


# ---- radius ------------------------------------------------------------------------------------


def block_radius(
    words: np.ndarray, query_words: np.ndarray, radius: int, first_id: int, n_threads: int
):
    """Rows of one in-memory block within `radius` of each query, as CSR (offsets, dists, ids).

    A counting pass sizes the output, a filling pass writes it (each task from its own offsets,
    parts in row order within a query), then each query's matches are sorted by distance.
    """
    n_queries = len(query_words)
    n_parts, tasks = _tasks(n_queries, len(words), 1, n_threads)
    below = words.dtype.type(radius + 1)
    counts = np.zeros((n_parts, n_queries), np.int64)

    def count(rows: slice, part: int, start: int, stop: int) -> None:
        kernels.scan_radius(
            words, query_words[rows], start, stop, below, first_id, counts[part, rows],
            None, None, None,
        )  # fmt: skip

    _parallel(count, tasks, n_threads)
    offsets = np.concatenate([[0], np.cumsum(counts.sum(axis=0))])
    cursors = offsets[:-1] + np.cumsum(counts, axis=0) - counts  # [P, Q] where each part writes
    dists = np.empty(offsets[-1], np.int32)
    ids = np.empty(offsets[-1], np.int64)
    filled = np.zeros_like(counts)

    def fill(rows: slice, part: int, start: int, stop: int) -> None:
        kernels.scan_radius(
            words, query_words[rows], start, stop, below, first_id, filled[part, rows],
            cursors[part, rows], dists, ids,
        )  # fmt: skip

    _parallel(fill, tasks, n_threads)
    kernels.sort_segments(offsets, dists, ids, _bits(words))
    return offsets, dists, ids


def split_csr(
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Join per-block CSR results into one (dists, ids) pair per query, sorted by (distance, id)."""
    n_queries = len(pieces[0][0]) - 1
    if len(pieces) == 1:
        offsets, dists, ids = pieces[0]
    else:
        query = np.concatenate([np.repeat(np.arange(n_queries), np.diff(o)) for o, _, _ in pieces])
        dists = np.concatenate([d for _, d, _ in pieces])
        ids = np.concatenate([i for _, _, i in pieces])
        order = np.lexsort((ids, dists, query))
        dists, ids = dists[order], ids[order]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(query, minlength=n_queries))])
    return [(dists[lo:hi], ids[lo:hi]) for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]


def radius_search(
    database, queries: np.ndarray, radius: int, threads: int | None = None, dask: str | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every database row within Hamming distance `radius` (inclusive) of each query.

    Same inputs as `topk`. Returns one (distances int32 [M_q], ids int64 [M_q]) pair per query,
    sorted by (distance, id).
    """
    source, query_words = _open(database, queries)
    if radius < 0:
        raise TbhError(f"--radius must be 0 or more bits (got {radius}).")
    radius = min(int(radius), _bits(query_words))
    if dask is not None:
        from tbhcli.search.cluster import dask_radius

        return split_csr(dask_radius(source, query_words, radius, dask, threads))
    n_threads = check_threads(threads)
    pieces = [
        block_radius(as_words(block), query_words, radius, first, n_threads)
        for first, block in source.blocks()
    ]
    return split_csr(pieces)


# ---- references --------------------------------------------------------------------------------


def _all_distances(database, queries: np.ndarray) -> np.ndarray:
    """Hamming distances [Q, N] by NumPy broadcasting: the obvious definition."""
    source, _ = _open(database, queries)
    codes = source.read(0, source.n_rows)
    return np.bitwise_count(queries[:, None, :] ^ codes[None, :, :]).sum(axis=2)


def topk_reference(database, queries: np.ndarray, k: int):
    """Slow NumPy `topk`: a stable sort of all distances, so ties keep the row order."""
    distances = _all_distances(database, queries)
    k = _check_k(k, distances.shape[1])
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
