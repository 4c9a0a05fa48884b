"""Search a code store's blocks on a Dask cluster and merge exactly as the single-process path.

Each task reads one block of committed rows from the store itself (workers need the store's path
on a shared file system) and returns its top-k parts or radius matches with global row ids; the
client merges them in row order with the same kernels, so the result is identical to `topk`.
"""

import numpy as np

from tbhcli.cluster import dask_client
from tbhcli.errors import TbhError
from tbhcli.hamming.blocks import (
    as_words,
    block_histograms,
    block_radius,
    block_topk,
    check_threads,
    merge_into,
)
from tbhcli.search.scan import CodeSource


def _store_path(source) -> str:
    if source.store_path is None:
        raise TbhError("--dask searches a code store; pass the store's path, not codes in memory.")
    return str(source.store_path.resolve())


def _read_words(path: str, start: int, stop: int) -> np.ndarray:
    return as_words(CodeSource(path).read(start, stop))


def _task_topk(path, start, stop, query_words, k, threads):
    return block_topk(_read_words(path, start, stop), query_words, k, start, check_threads(threads))


def _task_radius(path, start, stop, query_words, radius, threads):
    words = _read_words(path, start, stop)
    return block_radius(words, query_words, radius, start, check_threads(threads))


def _run(source, task, query_words, argument, address: str, threads: int | None):
    """Submit `task` for every block of the store; yield the results in row order."""
    path = _store_path(source)
    # a local cluster's workers are single-threaded: tasks then run numba on one thread each
    task_threads = 1 if address == "local" else None
    with dask_client(address) as client:
        shared = client.scatter(query_words, broadcast=True)
        futures = [
            client.submit(
                task, path, start, stop, shared, argument, threads or task_threads, pure=False
            )
            for start, stop in source.ranges()
        ]
        for future in futures:  # in row order, one at a time: memory stays at one result
            yield future.result()


def dask_topk(source, query_words, k, bits, address, threads):
    """`topk` over the blocks of a store on a Dask cluster; (dists, ids) [Q, k]."""
    best = None
    for parts in _run(source, _task_topk, query_words, k, address, threads):
        best = merge_into(best, parts, k, bits)
    return best


def dask_radius(source, query_words, radius, address, threads):
    """`radius_search` over the blocks of a store on a Dask cluster; CSR pieces in row order."""
    return list(_run(source, _task_radius, query_words, radius, address, threads))


def _task_histograms(path, start, stop, query_codes, query_labels, db_labels, relevance):
    block = CodeSource(path).read(start, stop)
    return block_histograms(block, query_codes, relevance(query_labels, db_labels))


def dask_histograms(source, query_codes, db_labels, query_labels, relevance, address):
    """`distance_histograms` over the blocks of a store on a Dask cluster; parts in row order."""
    path = _store_path(source)
    with dask_client(address) as client:
        codes, labels = client.scatter([query_codes, query_labels], broadcast=True)
        futures = [
            client.submit(
                _task_histograms,
                path,
                start,
                stop,
                codes,
                labels,
                db_labels[start:stop],
                relevance,
                pure=False,
            )
            for start, stop in source.ranges()
        ]
        for future in futures:
            yield future.result()
