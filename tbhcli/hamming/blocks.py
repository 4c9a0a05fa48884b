"""One in-memory block of a database searched exactly on a thread pool, and blocks merged exactly.

`block_topk` and `block_radius` run the numba kernels (kernels.py) over database words [n, W]
whose rows start at a given global id, split into (query block, row range) tasks; `merge_into`
and `split_csr` join the results of consecutive blocks so that they equal one scan of all rows,
ties by row. `block_histograms` counts distances of one block for the radius metrics. Callers
(search/, storage/mih_tables.py, Dask workers) decide where the blocks come from.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.hamming import kernels

MAX_QUERY_BLOCK = 256  # queries sharing one pass over the database
BUFFER_BYTES = 32 << 20  # per query block: candidate buffers of (2k + TILE) x 12 bytes a query
MIN_PART_ROWS = 16384  # rows worth a task of their own


def check_codes(codes: np.ndarray, what: str) -> np.ndarray:
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


def check_threads(threads: int | None) -> int:
    """Worker threads for the kernels (they release the GIL): `threads`, or the usable cores."""
    if threads is not None and threads < 1:
        raise TbhError(f"--threads must be at least 1 (got {threads}).")
    return threads or len(os.sched_getaffinity(0))


def parallel(run, tasks: list[tuple], n_threads: int) -> None:
    """run(*task) for every task on n_threads threads; exceptions propagate."""
    if n_threads == 1 or len(tasks) <= 1:
        for task in tasks:
            run(*task)
        return
    with ThreadPoolExecutor(min(n_threads, len(tasks))) as pool:
        for done in [pool.submit(run, *task) for task in tasks]:
            done.result()


def split_tasks(n_queries: int, n_rows: int, k: int, n_threads: int) -> tuple[int, list[tuple]]:
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


def code_bits(words: np.ndarray) -> int:
    """Bits per code of words [N, W] (after any padding): distances lie in [0, bits]."""
    return words.shape[1] * words.itemsize * 8


# ---- top-k ---------------------------------------------------------------------------------------


def block_topk(words: np.ndarray, query_words: np.ndarray, k: int, first_id: int, n_threads: int):
    """Top-k over one in-memory block of database words [n, W] whose rows start at first_id.

    Returns parts (dists int32, ids int64) [P, Q, k], each part sorted by (distance, row) and
    padded with distance bits + 1 and id -1 where it has fewer than k rows.
    """
    n_queries, bits = len(query_words), code_bits(query_words)
    n_parts, tasks = split_tasks(n_queries, len(words), k, n_threads)
    dists = np.full((n_parts, n_queries, k), bits + 1, np.int32)
    ids = np.full((n_parts, n_queries, k), -1, np.int64)

    def run(rows: slice, part: int, start: int, stop: int) -> None:
        kernels.scan_topk(
            words, query_words[rows], start, stop, k, first_id, dists[part, rows], ids[part, rows]
        )

    parallel(run, tasks, n_threads)
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


# ---- radius --------------------------------------------------------------------------------------


def block_radius(
    words: np.ndarray, query_words: np.ndarray, radius: int, first_id: int, n_threads: int
):
    """Rows of one in-memory block within `radius` of each query, as CSR (offsets, dists, ids).

    A counting pass sizes the output, a filling pass writes it (each task from its own offsets,
    parts in row order within a query), then each query's matches are sorted by distance.
    """
    n_queries = len(query_words)
    n_parts, tasks = split_tasks(n_queries, len(words), 1, n_threads)
    below = words.dtype.type(radius + 1)
    counts = np.zeros((n_parts, n_queries), np.int64)

    def count(rows: slice, part: int, start: int, stop: int) -> None:
        kernels.scan_radius(
            words, query_words[rows], start, stop, below, first_id, counts[part, rows],
            None, None, None,
        )  # fmt: skip

    parallel(count, tasks, n_threads)
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

    parallel(fill, tasks, n_threads)
    kernels.sort_segments(offsets, dists, ids, code_bits(words))
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


# ---- distance counts -----------------------------------------------------------------------------


def block_histograms(
    block: np.ndarray,
    query_codes: np.ndarray,
    relevant: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(all, relevant) counts int64 [Q, M + 1] of one block of database codes uint8 [rows, B];
    `relevant` is bool [Q, rows]."""
    n_queries, n_bytes = query_codes.shape
    width = 8 * n_bytes + 1
    dist = np.bitwise_count(query_codes[:, None, :] ^ block[None, :, :]).sum(axis=2, dtype=np.int64)
    cells = (np.arange(n_queries)[:, None] * width + dist).ravel()  # (Q * rows,)
    counts_all = np.bincount(cells, minlength=n_queries * width)
    counts_rel = np.bincount(cells[relevant.ravel()], minlength=n_queries * width)
    return counts_all.reshape(n_queries, width), counts_rel.reshape(n_queries, width)
