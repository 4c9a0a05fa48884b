"""Per query, how many database items (and how many relevant ones) lie at each Hamming distance.

One exhaustive pass over the database drives the radius metrics (`p@rR`) and the PR curve. Like
`topk`, it runs on `threads` threads (default: all cores) or, with `dask`, over a store's blocks
on a Dask cluster (`tbhcli.search.cluster`); the counts are the same either way.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tbhcli.hamming.blocks import block_histograms, check_threads
from tbhcli.search.scan import CodeSource

HISTOGRAM_CHUNK_BYTES = 64 << 20  # bound on one thread's [Q, rows, bytes] XOR block

# relevance(query_labels, db_labels[start:stop]) -> bool [Q, stop - start]
Relevance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _rows_histograms(source, query_codes, query_labels, db_labels, relevance, start, stop):
    block = source.read(start, stop)
    return block_histograms(block, query_codes, relevance(query_labels, db_labels[start:stop]))


def distance_histograms(
    db_codes,
    query_codes: np.ndarray,
    db_labels: np.ndarray,
    query_labels: np.ndarray,
    relevance: Relevance,
    threads: int | None = None,
    dask: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query and Hamming distance d: (all items at d, relevant items at d), each [Q, M + 1].

    db_codes: packed uint8 [N, B] (array, zarr array, open CodeStore or store path); which
    database rows count as relevant for each query is `relevance(query_labels, db_labels[rows])`
    (a top-level function, so that Dask workers can run it).
    """
    query_codes = np.ascontiguousarray(query_codes)
    source = CodeSource(db_codes)
    if dask is not None:
        from tbhcli.search.cluster import dask_histograms

        parts = dask_histograms(source, query_codes, db_labels, query_labels, relevance, dask)
    else:
        n_threads = check_threads(threads)
        rows = max(1, HISTOGRAM_CHUNK_BYTES // max(1, query_codes.size))
        ranges = [(s, min(s + rows, source.n_rows)) for s in range(0, source.n_rows, rows)]
        args = (source, query_codes, query_labels, db_labels, relevance)
        with ThreadPoolExecutor(min(n_threads, max(1, len(ranges)))) as pool:
            parts = pool.map(lambda r: _rows_histograms(*args, *r), ranges)
    width = 8 * query_codes.shape[1] + 1
    counts_all = np.zeros((len(query_codes), width), np.int64)
    counts_rel = np.zeros((len(query_codes), width), np.int64)
    for part_all, part_rel in parts:
        counts_all += part_all
        counts_rel += part_rel
    return counts_all, counts_rel
