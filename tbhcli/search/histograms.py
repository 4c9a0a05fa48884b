"""Per query, how many database items (and how many relevant ones) lie at each Hamming distance."""

from collections.abc import Callable

import numpy as np

HISTOGRAM_CHUNK_BYTES = 64 << 20  # bound on the [Q, rows, bytes] XOR block in distance_histograms


def distance_histograms(
    db_codes,
    query_codes: np.ndarray,
    relevant: Callable[[int, int], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Per query and Hamming distance d: (all items at d, relevant items at d), each [Q, M + 1].

    db_codes: packed uint8 [N, B] (array or open CodeStore); relevant(start, stop) gives bool
    [Q, stop - start], which database rows count for each query (labels stay with the caller).
    One exhaustive pass over the database in chunks; it drives the radius metrics and the PR curve.
    """
    n_queries, n_bytes = query_codes.shape
    width = 8 * n_bytes + 1
    counts_all = np.zeros(n_queries * width, np.int64)
    counts_rel = np.zeros(n_queries * width, np.int64)
    rows = max(1, HISTOGRAM_CHUNK_BYTES // max(1, n_queries * n_bytes))
    offsets = (np.arange(n_queries) * width)[:, None]
    for start in range(0, len(db_codes), rows):
        block = _read_rows(db_codes, start, start + rows)
        dist = np.bitwise_count(query_codes[:, None, :] ^ block[None, :, :]).sum(
            axis=2, dtype=np.int64
        )
        cells = (offsets + dist).ravel()
        rel = relevant(start, start + len(block)).ravel()
        counts_all += np.bincount(cells, minlength=len(counts_all))
        counts_rel += np.bincount(cells[rel], minlength=len(counts_rel))
    return counts_all.reshape(n_queries, width), counts_rel.reshape(n_queries, width)


def _read_rows(db_codes, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a packed-code array or of an open CodeStore (committed rows)."""
    if hasattr(db_codes, "read_codes"):
        return db_codes.read_codes(start, stop)
    return np.asarray(db_codes[start:stop])
