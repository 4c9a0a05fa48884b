"""Which method answers a top-k batch: the multi-index (mih.py) or the scan (scan.py).

The rule for method="auto" (docs/search.md), per query batch:
1. The scan, when the database has no multi-index tables (an array, a zarr array, a store never
   indexed with `--multi-index`), when more than 1/8 of its rows were appended after the tables
   were built, when k * CHECK_COST >= N (a search checks at least k codes), or when
   N * Q < SMALL_BATCH (the scan takes under ~0.5 s, and the sample, the tables' opening and
   the probe setup cost 5-15 ms: 9-15 % of the scan at 1M rows x 200 queries, bench/mih.py).
2. Otherwise the multi-index answers the first SAMPLE_QUERIES queries, each allowed a quarter of
   the work that scanning the database for it costs (N scanned rows; `mih.PROBE_COST` a probed
   value, `mih.CHECK_COST` a checked code). A query that runs out would cost its allowance and
   then a scan; if the sample's mean cost so counted is above AUTO_SHARE of a scan, the scan
   answers the whole batch (uniform random codes end here, after at most a quarter of scanning
   for those few queries).
3. Otherwise the multi-index answers the other queries and the sample's that ran out, each
   allowed the work of a scan; queries that run out again are answered by one scan at the end.
Results are the same whichever answers: both are exact by (distance, row).
"""

import logging

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.hamming import mih
from tbhcli.hamming.blocks import as_words, code_bits, merge_into
from tbhcli.search.scan import CodeSource, scan_topk
from tbhcli.storage.mih_tables import TablesDamaged, open_tables
from tbhcli.terminal import shown

SMALL_BATCH = 10**9  # rows x queries below which auto scans without trying the tables
AUTO_SHARE = 0.8  # the multi-index must look this much cheaper than the scan on the sample
log = logging.getLogger(__name__)


def _tables(source: CodeSource, method: str) -> mih.MultiIndex | None:
    """The multi-index of a source, or None for the scan."""
    if source.store is not None:
        try:
            index = open_tables(source.store)
        except TablesDamaged as exc:  # never a wrong answer: the scan answers instead
            log.warning("%s", shown(exc))
            return None
        if index is None and method == "mih":
            raise TbhError(
                f"store {source.store.path} has no multi-index tables; build them with "
                "`tbh index IMAGES_DIR --multi-index`, or search with method='scan'."
            )
        return index
    if method != "mih":
        return None
    return mih.build_index(np.ascontiguousarray(as_words(source.read(0, source.n_rows))))


def multi_index_topk(
    source: CodeSource, query_words: np.ndarray, k: int, n_threads: int, method: str
):
    """`topk` by the multi-index, or None when (method "auto") the scan should answer."""
    n, n_queries = source.n_rows, len(query_words)
    if method == "auto" and (k * mih.check_cost(1) >= n or n * n_queries < SMALL_BATCH):
        return None  # decided before opening anything
    index = _tables(source, method)
    if index is None:
        return None
    indexed = index.rows_indexed
    if method == "auto" and 8 * (n - indexed) > n:
        return None
    bits = code_bits(query_words)
    query_words = np.ascontiguousarray(query_words)
    values = mih.query_values(query_words, index.bounds)
    probe = mih.Probe.of(index)
    width = min(k, indexed)
    best_d = np.full((n_queries, width), bits + 1, np.int32)
    best_i = np.full((n_queries, width), -1, np.int64)
    stats = np.zeros((n_queries, 4), np.int64)
    allowance = -1 if method == "mih" else n  # work in scanned rows: a scan for each query costs n
    rest = np.arange(n_queries)  # the queries the (main) multi-index search answers
    if method == "auto":
        done = min(n_queries, mih.SAMPLE_QUERIES)
        probe.search(
            query_words[:done], values[:done], int(allowance * mih.SAMPLE_SHARE),
            best_d[:done], best_i[:done], stats[:done], n_threads,
        )  # fmt: skip
        failed = stats[:done, 3] < 0
        cost = np.where(failed, allowance * mih.SAMPLE_SHARE + n, stats[:done, 3])
        if cost.mean() > AUTO_SHARE * n:
            return None
        # sample queries that ran out go again with the full allowance: scanning for a few
        # queries still reads the whole store
        rest = np.concatenate([np.flatnonzero(failed), np.arange(done, n_queries)])
        allowance = int(allowance * mih.QUERY_SHARE)
    found_d, found_i, found_stats = best_d[rest], best_i[rest], stats[rest]
    probe.search(
        query_words[rest], values[rest], allowance, found_d, found_i, found_stats, n_threads
    )
    best_d[rest], best_i[rest], stats[rest] = found_d, found_i, found_stats
    if width < k:
        best_d = np.pad(best_d, ((0, 0), (0, k - width)), constant_values=bits + 1)
        best_i = np.pad(best_i, ((0, 0), (0, k - width)), constant_values=-1)
    if indexed < n:  # rows appended after the tables: scanned, then merged in row order
        tail = scan_topk(source, query_words, k, n_threads, indexed, n)
        best_d, best_i = merge_into((best_d, best_i), (tail[0][None], tail[1][None]), k, bits)
    hard = np.flatnonzero(stats[:, 3] < 0)
    if len(hard):
        best_d[hard], best_i[hard] = scan_topk(source, query_words[hard], k, n_threads)
    return best_d, best_i
