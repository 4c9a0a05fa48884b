"""`topk` and `radius_search`: which engine answers a search, above every engine it picks.

`topk(database, queries, k)` returns what sorting every database row by (Hamming distance, row
index) gives, in faiss's argument and result order; `radius_search` returns every row within a
radius. `database` is packed uint8 codes [N, bits/8] as a NumPy array, a zarr array, an open
`CodeStore`, or the path of a code store (`codes.zarr`), read in blocks (scan.py). With
`dask="local"` or a scheduler address, the blocks of a store are searched on a Dask cluster
(cluster.py) and merged exactly as here; otherwise the scan (scan.py) or, for top-k, the
multi-index (planner.py) answers. Every path returns the same result.
"""

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.hamming.blocks import check_threads, code_bits, split_csr
from tbhcli.search.scan import check_k, open_search, scan_radius, scan_topk

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

    >>> import numpy as np
    >>> database = np.array([[0b0000], [0b1111], [0b0001]], np.uint8)
    >>> topk(database, np.array([[0b0000]], np.uint8), k=2)
    (array([[0, 1]], dtype=int32), array([[0, 2]]))
    """
    if method not in METHODS:
        raise TbhError(f"method must be one of {', '.join(METHODS)} (got {method!r}).")
    source, query_words = open_search(database, queries)
    k = check_k(k, source.n_rows)
    if dask is not None:
        from tbhcli.search.cluster import dask_topk

        return dask_topk(source, query_words, k, code_bits(query_words), dask, threads)
    n_threads = check_threads(threads)
    if method != "scan":
        from tbhcli.search.planner import multi_index_topk

        found = multi_index_topk(source, query_words, k, n_threads, method)
        if found is not None:
            return found
    return scan_topk(source, query_words, k, n_threads)


def radius_search(
    database, queries: np.ndarray, radius: int, threads: int | None = None, dask: str | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every database row within Hamming distance `radius` (inclusive) of each query.

    Same inputs as `topk`. Returns one (distances int32 [M_q], ids int64 [M_q]) pair per query,
    sorted by (distance, id).
    """
    source, query_words = open_search(database, queries)
    if radius < 0:
        raise TbhError(f"--radius must be 0 or more bits (got {radius}).")
    radius = min(int(radius), code_bits(query_words))
    if dask is not None:
        from tbhcli.search.cluster import dask_radius

        return split_csr(dask_radius(source, query_words, radius, dask, threads))
    return scan_radius(source, query_words, radius, check_threads(threads))
