"""Exact top-k by multi-index hashing (Norouzi, Punjani, Fleet, CVPR 2012): sub-linear search.

Each code is cut into m disjoint substrings of s <= 32 bits (`substring_bounds`); each substring has
a table from its value to the rows holding it, with a copy of their codes in the same order, so
that checking a bucket's rows reads memory in sequence instead of at random. A code within
distance r of a query lies within r // m of it in at least one substring (pigeonhole), so the
search probes, for substring radius rho = 0, 1, 2, ... and each substring j in turn, every value
at exactly rho bits from the query's substring j, and checks each row found by its full distance.
Once (rho, j) is probed, every row at distance <= m * rho + j has been seen (an unseen row
differs by > rho bits in substrings <= j and by >= rho in the others), so when the k-th best
distance is within that bound the answer is exact, ties included: every row at the k-th distance
has been seen, and the best list orders by (distance, row) like the scan.

A table (one per substring and *segment*, a run of rows indexed together) is CSR with a directory:
`directory` [2^t + 1] offsets into `rows` (uint32, the segment's rows sorted by value, then row)
over the top t = min(s, bit length of the segment's rows) bits of a value, so the directory is at
most twice the rows; when t < s, `keys` holds the sorted values and a bucket is narrowed by binary
search. Rows past the last segment (appended since) are scanned and merged (planner.py).

Cost: on codes that cluster, a query touches a few buckets; on uniform random codes it touches a
sizeable fraction of the database in random order and a scan is faster. `topk` with
method="auto" measures this instead of guessing (the rule is in `choose_and_search`).
"""

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit
from numba.typed import List

from tbhcli.search.kernels import popcount

MAX_SUBSTRING_BITS = 32  # a substring value is a uint32 and a directory stays addressable
# Work units: one probed value or one checked row. A unit costs about as much as RANDOM_ROW_COST
# rows of the vectorised scan (40-320 measured on clustered codes, bench/mih.py; set high, so
# that auto errs on the side of the scan).
RANDOM_ROW_COST = 128
SAMPLE_QUERIES = 8  # auto tries the multi-index on this many queries of a batch first
SAMPLE_SHARE = 0.25  # ... giving each a quarter of what scanning for it would cost
QUERY_SHARE = 0.5  # then each other query half of it, before the scan takes over
TASKS_PER_THREAD = 4  # query slices per thread: evens out queries of very different cost


@dataclass
class Segment:
    """Tables of rows [start, stop): per substring a directory, sorted rows and (maybe) keys."""

    start: int
    stop: int
    directories: list[np.ndarray]  # uint32 [2^t + 1] each
    rows: list[np.ndarray]  # uint32 [stop - start] each, segment-relative
    keys: list[np.ndarray]  # uint32 [stop - start], or [0] when the directory is exact
    codes: list[np.ndarray]  # words [stop - start, W] in the order of `rows`
    shifts: list[int]  # s - t per substring: the value bits the directory ignores


@dataclass
class MultiIndex:
    """The tables of a database: substring bit ranges `bounds` [m + 1] and contiguous segments."""

    bits: int
    bounds: np.ndarray
    segments: list[Segment]

    @property
    def rows_indexed(self) -> int:
        return self.segments[-1].stop if self.segments else 0


# ---- substrings ----------------------------------------------------------------------------------


def substring_count(bits: int, n_rows: int) -> int:
    """m ~ bits / log2(N) (the paper's choice: about one row per bucket), with s <= 32 bits."""
    ideal = round(bits / math.log2(max(n_rows, 2)))
    return int(min(bits, max(ideal, -(-bits // MAX_SUBSTRING_BITS), 1)))


def substring_bounds(bits: int, m: int) -> np.ndarray:
    """Bit ranges of m near-equal substrings: int64 [m + 1], bit i of word w being code bit
    w * wordbits + i of `as_words`'s view."""
    bounds = np.linspace(0, bits, m + 1).round().astype(np.int64)
    if np.diff(bounds).max() > MAX_SUBSTRING_BITS:
        raise ValueError(f"{m} substrings of {bits} bits are wider than {MAX_SUBSTRING_BITS} bits")
    return bounds


@njit(cache=True, nogil=True)
def _value(row, lo, width):
    """Bits [lo, lo + width) of one code's words row [W], width <= 32, as an int64."""
    word_bits = row.itemsize * 8
    w = lo // word_bits
    off = lo - w * word_bits
    value = np.uint64(row[w]) >> np.uint64(off)
    if off + width > word_bits:
        value |= np.uint64(row[w + 1]) << np.uint64(word_bits - off)
    return np.int64(value & np.uint64((1 << width) - 1))


@njit(cache=True, nogil=True)
def substring_values(words, lo, width, out):
    """Values of bits [lo, lo + width) of every row of words [N, W] into out [N]."""
    for i in range(words.shape[0]):
        out[i] = _value(words[i], lo, width)


def query_values(query_words: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Substring values int64 [Q, m] of query words [Q, W]."""
    out = np.empty((len(bounds) - 1, len(query_words)), np.int64)
    for j in range(len(bounds) - 1):
        substring_values(query_words, bounds[j], bounds[j + 1] - bounds[j], out[j])
    return np.ascontiguousarray(out.T)


# ---- building ------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _bucket_order(prefix, directory, out):
    """Rows grouped by prefix in row order (a counting sort), given the prefix offsets."""
    cursor = directory[:-1].astype(np.int64)
    for i in range(prefix.shape[0]):
        p = prefix[i]
        out[cursor[p]] = i
        cursor[p] += 1


def build_table(values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One substring's table over values uint32 [n]: (directory, rows, keys, shift)."""
    n = len(values)
    if n >= 1 << 32:
        raise ValueError("a segment holds fewer than 2^32 rows")
    top = min(width, max(1, n.bit_length()))
    shift = width - top
    prefix = values >> np.uint32(shift)
    directory = np.zeros((1 << top) + 1, np.uint32)
    np.cumsum(np.bincount(prefix, minlength=1 << top), out=directory[1:])
    if shift == 0:
        rows = np.empty(n, np.uint32)
        _bucket_order(prefix, directory, rows)
        return directory, rows, np.zeros(0, np.uint32), 0
    order = np.argsort(values, kind="stable")  # by value, then row: also grouped by prefix
    return directory, order.astype(np.uint32), values[order], shift


def build_segment(words: np.ndarray, bounds: np.ndarray, start: int) -> Segment:
    """Tables for rows [start, start + n) whose words [n, W] are given."""
    directories, rows, keys, codes, shifts = [], [], [], [], []
    values = np.empty(len(words), np.uint32)
    for j in range(len(bounds) - 1):
        width = int(bounds[j + 1] - bounds[j])
        substring_values(words, bounds[j], width, values)
        table = build_table(values, width)
        directories.append(table[0])
        rows.append(table[1])
        keys.append(table[2])
        codes.append(words[table[1]])
        shifts.append(table[3])
    return Segment(start, start + len(words), directories, rows, keys, codes, shifts)


def build_index(words: np.ndarray, m: int | None = None) -> MultiIndex:
    """In-memory tables (one segment) over database words [N, W]."""
    bits = words.shape[1] * words.itemsize * 8
    bounds = substring_bounds(bits, m or substring_count(bits, len(words)))
    return MultiIndex(bits, bounds, [build_segment(words, bounds, 0)])


# ---- searching -----------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _distance(a, b):
    d = 0
    for w in range(a.shape[0]):
        d += np.int64(popcount(a[w] ^ b[w]))
    return d


@njit(cache=True, nogil=True)
def _insert(best_d, best_i, count, dist, row):
    """Put (dist, row) into a list sorted by (distance, row) holding count of k slots.

    Returns the new count; a row already listed, or no better than a full list's last, is ignored.
    """
    k = best_d.shape[0]
    if count == k and (dist > best_d[k - 1] or (dist == best_d[k - 1] and row >= best_i[k - 1])):
        return count
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) >> 1
        if best_d[mid] < dist or (best_d[mid] == dist and best_i[mid] < row):
            lo = mid + 1
        else:
            hi = mid
    if lo < count and best_d[lo] == dist and best_i[lo] == row:
        return count  # found again through another substring
    if count == k:
        count -= 1  # the last one drops out
    for i in range(count, lo, -1):
        best_d[i] = best_d[i - 1]
        best_i[i] = best_i[i - 1]
    best_d[lo] = dist
    best_i[lo] = row
    return count + 1


@njit(cache=True, nogil=True)
def _probe_table(
    directory, rows, keys, codes, shift, first, centre, width, rho, query, best_d, best_i, count,
    work, budget, pos,
):  # fmt: skip
    """Check the rows of one table whose value is exactly rho bits from `centre`.

    Returns (count, work); work is -1 once it passes `budget` (>= 0).
    """
    k = best_d.shape[0]
    for c in range(rho):
        pos[c] = c
    while True:  # every value at exactly rho bits from the query's substring
        value = centre
        for c in range(rho):
            value ^= np.int64(1) << pos[c]
        lo = np.int64(directory[value >> shift])
        hi = np.int64(directory[(value >> shift) + 1])
        if shift > 0 and hi > lo:
            bucket = keys[lo:hi]
            hi = lo + np.searchsorted(bucket, np.uint32(value), side="right")
            lo = lo + np.searchsorted(bucket, np.uint32(value), side="left")
        work += 1 + hi - lo
        for e in range(lo, hi):
            dist = _distance(codes[e], query)
            if count < k or dist <= best_d[k - 1]:
                count = _insert(best_d, best_i, count, dist, first + np.int64(rows[e]))
        if budget >= 0 and work > budget:
            return count, -1
        c = rho - 1  # the next combination of rho bit positions
        while c >= 0 and pos[c] == width - rho + c:
            c -= 1
        if c < 0:
            return count, work
        pos[c] += 1
        for e in range(c + 1, rho):
            pos[e] = pos[e - 1] + 1


@njit(cache=True, nogil=True)
def _search_one(
    query, values, bounds, starts, dirs, rows, keys, codes, shifts, budget, best_d, best_i, count,
    pos,
):  # fmt: skip
    """Multi-index search of one query, continuing the best lists (count entries filled).

    Returns (work, count); work is -1 when it passed `budget` (>= 0) before the answer was exact.
    """
    k = best_d.shape[0]
    m = bounds.shape[0] - 1
    widest = 0
    for j in range(m):
        widest = max(widest, bounds[j + 1] - bounds[j])
    work = 0
    for rho in range(widest + 1):
        for j in range(m):
            width = bounds[j + 1] - bounds[j]
            if rho <= width:
                for s in range(starts.shape[0]):  # typed-list lookups once per table, not value
                    t = s * m + j
                    count, work = _probe_table(
                        dirs[t], rows[t], keys[t], codes[t], shifts[t], starts[s], values[j],
                        width, rho, query, best_d, best_i, count, work, budget, pos,
                    )  # fmt: skip
                    if work < 0:
                        return -1, count
            if count == k and best_d[k - 1] <= m * rho + j:
                return work, count
    return work, count


@njit(cache=True, nogil=True)
def search_queries(
    queries, values, bounds, starts, dirs, rows, keys, codes, shifts, budget, best_d, best_i,
    counts, work,
):  # fmt: skip
    """`_search_one` for each query [Q, W]; best lists [Q, k] arrive seeded with counts [Q]."""
    pos = np.empty(MAX_SUBSTRING_BITS + 1, np.int64)
    for a in range(queries.shape[0]):
        work[a], counts[a] = _search_one(
            queries[a], values[a], bounds, starts, dirs, rows, keys, codes, shifts, budget,
            best_d[a], best_i[a], counts[a], pos,
        )  # fmt: skip


@dataclass
class Probe:
    """Everything the kernel reads, in numba's typed containers (built once per search)."""

    bounds: np.ndarray
    starts: np.ndarray
    dirs: List
    rows: List
    keys: List
    codes: List
    shifts: np.ndarray

    @classmethod
    def of(cls, index: MultiIndex) -> "Probe":
        typed = [List(), List(), List(), List()]
        for segment in index.segments:
            for j in range(len(index.bounds) - 1):
                typed[0].append(segment.directories[j])
                typed[1].append(segment.rows[j])
                typed[2].append(segment.keys[j])
                typed[3].append(segment.codes[j])
        return cls(
            index.bounds,
            np.array([s.start for s in index.segments], np.int64),
            *typed,
            np.array([x for s in index.segments for x in s.shifts], np.int64),
        )

    def search(self, queries, values, budget: int, best_d, best_i, counts, work, threads: int):
        """search_queries over slices of the queries on `threads` threads (it releases the GIL)."""
        n = len(queries)
        step = max(1, -(-n // (threads * TASKS_PER_THREAD)))

        def run(lo: int) -> None:
            hi = lo + step
            search_queries(
                queries[lo:hi], values[lo:hi], self.bounds, self.starts, self.dirs, self.rows,
                self.keys, self.codes, self.shifts, budget, best_d[lo:hi], best_i[lo:hi],
                counts[lo:hi], work[lo:hi],
            )  # fmt: skip

        if threads == 1 or n <= step:
            for lo in range(0, n, step):
                run(lo)
            return
        with ThreadPoolExecutor(threads) as pool:
            for done in [pool.submit(run, lo) for lo in range(0, n, step)]:
                done.result()
