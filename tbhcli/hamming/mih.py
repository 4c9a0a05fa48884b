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
search. Rows past the last segment (appended since) are scanned and merged (search/planner.py).

Cost: on codes that cluster, a query touches a few buckets; on uniform random codes it touches a
sizeable fraction of the database in random order and a scan is faster. `topk` with
method="auto" measures this instead of guessing (the rule is in `tbhcli.search.planner`).
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit
from numba.typed import List

from tbhcli.hamming.blocks import block_topk, merge_into
from tbhcli.hamming.kernels import popcount

MAX_SUBSTRING_BITS = 32  # a substring value is a uint32 and a directory stays addressable
M_SAMPLE_QUERIES = 256  # rows whose searches `choose_substring_count` estimates ...
M_SAMPLE_ROWS = 65536  # ... from their substring distances to this many rows
SAMPLE_QUERIES = 8  # auto tries the multi-index on this many queries of a batch first
SAMPLE_SHARE = 0.25  # ... giving each a quarter of what scanning for it would cost
QUERY_SHARE = 1.0  # then each other query as much as a scan, before the scan takes over
TASKS_PER_THREAD = 4  # query slices per thread: evens out queries of very different cost


@dataclass
class Segment:
    """Tables of rows [start, stop) over their D distinct codes: `rows` lists the rows of distinct
    code c at [runs[c], runs[c + 1]) in row order; per substring a directory into the distinct
    codes in bucket order (`ids`, their numbers c), their codes in that order, maybe keys."""

    start: int
    stop: int
    rows: np.ndarray  # uint32 [stop - start], segment-relative, by (code, row)
    runs: np.ndarray  # uint32 [D + 1]
    directories: list[np.ndarray]  # uint32 [2^t + 1] each
    ids: list[np.ndarray]  # uint32 [D] each
    keys: list[np.ndarray]  # uint32 [D], or [0] when the directory is exact
    codes: list[np.ndarray]  # words [D, W] in the order of `ids`
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


@njit(cache=True, nogil=True)
def _substring_histograms(rows, queries, masks, out):
    """out[q, j, d] += how many of rows [R, W] are d bits from query q [Q, W] in substring j."""
    for q in range(queries.shape[0]):
        for r in range(rows.shape[0]):
            for j in range(masks.shape[0]):
                d = 0
                for w in range(rows.shape[1]):
                    d += popcount((rows[r, w] ^ queries[q, w]) & masks[j, w])
                out[q, j, d] += 1


def estimated_work(
    words: np.ndarray, n_rows: int, kth: np.ndarray, queries: np.ndarray, m: int
) -> np.ndarray:
    """Work in scanned rows (PROBE_COST a probe, CHECK_COST a checked code) of a search with m
    substrings for each of `queries` [Q, W] whose k-th distance is kth [Q], from the substring
    distances of a sample `words` [R, W] of a database's n_rows distinct codes, scaled by
    n_rows / R."""
    bits = words.shape[1] * words.itemsize * 8
    bounds = substring_bounds(bits, m)
    widths = np.diff(bounds)
    masks = substring_masks(bounds, words.shape[1], words.itemsize * 8).astype(words.dtype)
    counts = np.zeros((len(queries), m, widths.max() + 1), np.int64)
    _substring_histograms(words, queries, masks, counts)
    work = np.zeros(len(queries))
    for rho in range(widths.max() + 1):
        for j in range(m):
            if rho > widths[j]:
                continue
            probed = kth >= m * rho + j  # queries that reach step (rho, j): those still running
            work += probed * (math.comb(int(widths[j]), rho) * PROBE_COST)
            work += probed * counts[:, j, rho] * (check_cost(words.shape[1]) * n_rows / len(words))
    return work


def choose_substring_count(words: np.ndarray, k: int = 100, seed: int = 0) -> int:
    """The m with the least estimated work for `k` nearest of a sample of the database's own rows.

    The paper's m ~ bits / log2(N) assumes uniform codes; on clustered codes most queries have a
    small k-th distance and crowded buckets, so a larger m (fewer probes) wins, while queries in
    sparse regions reach large radii and want m small. This measures both: the exact k-th distance
    of M_SAMPLE_QUERIES rows as queries (a scan), their substring distance histograms over
    M_SAMPLE_ROWS distinct codes, and `estimated_work` for every m with substrings of 8 to 32
    bits.
    """
    n, bits = len(words), words.shape[1] * words.itemsize * 8
    rng = np.random.default_rng(seed)
    queries = np.ascontiguousarray(words[rng.choice(n, min(n, M_SAMPLE_QUERIES), replace=False)])
    distinct = distinct_codes(words)[2]
    d = len(distinct)
    sample = np.ascontiguousarray(
        distinct[np.sort(rng.choice(d, min(d, M_SAMPLE_ROWS), replace=False))]
    )
    k = min(k, n)
    parts = block_topk(words, queries, k, 0, len(os.sched_getaffinity(0)))
    kth = merge_into(None, parts, k, bits)[0][:, k - 1].astype(np.int64)
    choices = range(-(-bits // MAX_SUBSTRING_BITS), max(1, bits // 8) + 1)
    work = {m: estimated_work(sample, d, kth, queries, m).mean() for m in choices}
    return min(work, key=work.get)


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
    """One substring's table over values uint32 [n]: (directory, order, keys, shift)."""
    n = len(values)
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


def distinct_codes(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows by (code, row) [n], runs [D + 1], distinct codes [D, W]) of words [n, W]."""
    n = len(words)
    if n >= 1 << 32:
        raise ValueError("a segment holds fewer than 2^32 rows")
    if words.shape[1] == 1:
        order = np.argsort(words[:, 0], kind="stable")
    else:
        order = np.lexsort(words.T[::-1])  # stable too
    ordered = words[order]
    new = np.ones(n, bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    firsts = np.flatnonzero(new)
    runs = np.append(firsts, n).astype(np.uint32)
    return order.astype(np.uint32), runs, np.ascontiguousarray(ordered[firsts])


def build_segment(words: np.ndarray, bounds: np.ndarray, start: int) -> Segment:
    """Tables for rows [start, start + n) whose words [n, W] are given.

    Checking a bucket costs a distance per distinct code, not per row: clustered codes repeat
    (40 % of 10M clustered ITQ codes are distinct, bench/mih.py), and a code's rows are listed
    in row order, so a full best list stops taking them at the first that loses."""
    rows, runs, distinct = distinct_codes(words)
    directories, ids, keys, codes, shifts = [], [], [], [], []
    values = np.empty(len(distinct), np.uint32)
    for j in range(len(bounds) - 1):
        width = int(bounds[j + 1] - bounds[j])
        substring_values(distinct, bounds[j], width, values)
        directory, order, table_keys, shift = build_table(values, width)
        directories.append(directory)
        ids.append(order)
        keys.append(table_keys)
        codes.append(distinct[order])
        shifts.append(shift)
    return Segment(start, start + len(words), rows, runs, directories, ids, keys, codes, shifts)


def build_index(words: np.ndarray, m: int | None = None) -> MultiIndex:
    """In-memory tables (one segment) over database words [N, W], m substrings (default: the
    cheapest by `choose_substring_count`)."""
    bits = words.shape[1] * words.itemsize * 8
    bounds = substring_bounds(bits, m or choose_substring_count(words))
    return MultiIndex(bits, bounds, [build_segment(words, bounds, 0)])


# ---- searching -----------------------------------------------------------------------------------

ROW_BITS = 40  # a candidate is the int64 key distance << ROW_BITS | row: one compare orders it
NO_LIMIT = np.iinfo(np.int64).max  # the best list's bound before it holds k rows
PROBE_BATCH = 64  # probed values whose buckets are looked up together (their loads overlap)
STRETCH = 64  # bucket rows whose distances one vector pass computes and counts below the bound
# Work, in scanned rows (what auto compares with N): a checked row and a probed bucket cost about
# CHECK_COST and PROBE_COST rows of the vectorised scan (bench/mih_profile.py, 1M-10M x 64-bit
# clustered codes: 7-15 and 40-130; a checked code is a memory read where the scan computes).
CHECK_COST = 16
PROBE_COST = 64
WIDE_CHECK = 4  # a code of several words is not a vector loop: CHECK_COST times this (128 bits)


def check_cost(n_words: int) -> int:
    """CHECK_COST for codes of n_words words."""
    return CHECK_COST * (1 if n_words == 1 else WIDE_CHECK)


@njit(cache=True, nogil=True, inline="always")
def _distance(codes, e, query):
    """Distance of bucket row e of codes (words [rows * W], flat) to query [W]."""
    d = np.int64(0)
    for w in range(query.shape[0]):
        d += np.int64(popcount(codes[e * query.shape[0] + w] ^ query[w]))
    return d


@njit(cache=True, nogil=True, inline="always")
def _count_within(codes, lo, hi, query, bound):
    """How many bucket rows [lo, hi) of codes are within `bound` of query: a vector loop with
    one word per code, as the scan's (it stores nothing: a store into an argument array kept
    LLVM from vectorising it, 8x slower)."""
    hits = 0
    if query.shape[0] == 1:
        stretch = codes[lo:hi]
        word = query[0]
        for i in range(hi - lo):
            hits += np.int64(popcount(stretch[i] ^ word)) <= bound
        return hits
    if query.shape[0] == 2:  # not vectorised (interleaved words), but 1.6x the general loop
        first, second = query[0], query[1]
        for e in range(lo, hi):
            d = np.int64(popcount(codes[2 * e] ^ first)) + np.int64(
                popcount(codes[2 * e + 1] ^ second)
            )
            hits += d <= bound
        return hits
    for e in range(lo, hi):
        hits += _distance(codes, e, query) <= bound
    return hits


@njit(cache=True, nogil=True)
def _first_probe(codes, e, query, masks, j, rho):
    """Whether probe (rho, substring j) is the first to find bucket row e (at rho bits in j): no
    substring before j is within rho bits of the query's and none after it within rho - 1."""
    n_words = query.shape[0]
    for other in range(masks.shape[0]):
        if other != j:
            d = 0
            for w in range(n_words):
                d += popcount((codes[e * n_words + w] ^ query[w]) & masks[other, w])
            if d < rho or (d == rho and other < j):
                return False
    return True


@njit(cache=True, nogil=True)
def _shrink(best, count, k):
    """Keep the k smallest of best[:count] (count >= k), sorted; returns the k-th key."""
    best[:count].sort()
    return best[k - 1]


@njit(cache=True, nogil=True)
def _probe_table(
    directory, ids, keys, codes, shift, rows, runs, first, centre, width, rho, j, query, masks, k,
    best, count, limit, pos, stats, budget, stage,
):  # fmt: skip
    """Check the codes of one table whose substring value is exactly rho bits from `centre`.

    The rows of candidate codes (found here first; keys below `limit`) go to best[count:]; the
    list shrinks to k when full. Returns (count, limit). stats: probes and checked codes are
    added; the work (slot 3) becomes -1 once it passes the budget (see `_search_one`), and the
    probe stops.
    """
    for c in range(rho):
        pos[c] = c
    values = np.empty(PROBE_BATCH, np.int64)
    spans = np.empty((PROBE_BATCH, 2), np.int64)
    more = True
    while more:
        n = 0
        while more and n < PROBE_BATCH:  # the next values at exactly rho bits from `centre`
            value = centre
            for c in range(rho):
                value ^= np.int64(1) << pos[c]
            values[n] = value
            n += 1
            c = rho - 1  # the next combination of rho bit positions
            while c >= 0 and pos[c] == width - rho + c:
                c -= 1
            more = c >= 0
            if more:
                pos[c] += 1
                for e in range(c + 1, rho):
                    pos[e] = pos[e - 1] + 1
        for i in range(n):  # independent loads, which the memory system overlaps
            spans[i, 0] = directory[values[i] >> shift]
            spans[i, 1] = directory[(values[i] >> shift) + 1]
        for i in range(n):
            lo, hi = spans[i, 0], spans[i, 1]
            if shift > 0 and hi > lo:
                bucket = keys[lo:hi]
                hi = lo + np.searchsorted(bucket, np.uint32(values[i]), side="right")
                lo = lo + np.searchsorted(bucket, np.uint32(values[i]), side="left")
            stats[0] += 1
            stats[1] += hi - lo
            if budget[0] >= 0 and stats[0] * budget[1] + stats[1] * budget[2] > budget[0]:
                stats[3] = -1
                return count, limit
            if stage == 0:
                continue
            for a in range(lo, hi, STRETCH):
                b = min(a + STRETCH, hi)
                bound = limit >> ROW_BITS
                if _count_within(codes, a, b, query, bound) == 0 or stage == 1:
                    continue
                for e in range(a, b):
                    d = _distance(codes, e, query)
                    if d > bound or not _first_probe(codes, e, query, masks, j, rho):
                        continue
                    code = ids[e]
                    for r in range(runs[code], runs[code + 1]):  # the code's rows, in row order
                        key = (d << ROW_BITS) | (first + np.int64(rows[r]))
                        if key >= limit:
                            break  # and so would every later row of this code
                        if count == best.shape[0]:
                            limit = _shrink(best, count, k)
                            count = k
                            if key >= limit:
                                break
                        best[count] = key
                        count += 1
                        if count == k and limit == NO_LIMIT:  # a bound as soon as there is one
                            limit = _shrink(best, count, k)
    return count, limit


@njit(cache=True, nogil=True)
def _search_one(
    query, values, bounds, masks, starts, rows, runs, dirs, ids, keys, codes, shifts, k, best, pos,
    stats, budget, stage, last_step,
):  # fmt: skip
    """Multi-index search of one query into best[:k] (keys, sorted); returns how many it holds.

    stats [4]: probes, checked codes, the step m * rho + j it stopped after, and the work in
    scanned rows (budget [3]: a probe costs budget[1], a checked code budget[2]), -1 once past
    budget[0] (when that is >= 0). It stops after step `last_step` if >= 0 (profiling).
    """
    m = bounds.shape[0] - 1
    widest = 0
    for j in range(m):
        widest = max(widest, bounds[j + 1] - bounds[j])
    count = 0
    limit = np.int64(NO_LIMIT)
    for rho in range(widest + 1):
        for j in range(m):
            width = bounds[j + 1] - bounds[j]
            if rho <= width:
                for s in range(starts.shape[0]):  # typed-list lookups once per table, not value
                    t = s * m + j
                    count, limit = _probe_table(
                        dirs[t], ids[t], keys[t], codes[t], shifts[t], rows[s], runs[s],
                        starts[s], values[j], width, rho, j, query, masks, k, best, count, limit,
                        pos, stats, budget, stage,
                    )  # fmt: skip
                    if stats[3] < 0:
                        return 0
            stats[2] = m * rho + j
            stats[3] = stats[0] * budget[1] + stats[1] * budget[2]
            if count > k or (count == k and limit == NO_LIMIT):
                limit = _shrink(best, count, k)
                count = k
            if count == k and (limit >> ROW_BITS) <= m * rho + j:
                return count
            if stats[2] == last_step:
                return count
    best[:count].sort()
    return count


@njit(cache=True, nogil=True)
def search_queries(
    queries, values, bounds, masks, starts, rows, runs, dirs, ids, keys, codes, shifts, out_d,
    out_i, stats, budget, stage, last_steps,
):  # fmt: skip
    """`_search_one` for each query [Q, W] into out [Q, k] (distance, row; padded past N rows)."""
    k = out_d.shape[1]
    best = np.empty(2 * k + STRETCH, np.int64)
    pos = np.empty(MAX_SUBSTRING_BITS + 1, np.int64)
    row_mask = (np.int64(1) << ROW_BITS) - 1
    for a in range(queries.shape[0]):
        count = _search_one(
            queries[a], values[a], bounds, masks, starts, rows, runs, dirs, ids, keys, codes,
            shifts, k, best, pos, stats[a], budget, stage, last_steps[a],
        )  # fmt: skip
        for i in range(min(count, k)):
            out_d[a, i] = best[i] >> ROW_BITS
            out_i[a, i] = best[i] & row_mask


def substring_masks(bounds: np.ndarray, n_words: int, word_bits: int) -> np.ndarray:
    """Per substring j, the words [m, W] whose set bits are substring j's bits."""
    bits = np.arange(n_words * word_bits)
    masks = np.zeros((len(bounds) - 1, n_words), np.uint64)
    for j in range(len(bounds) - 1):
        inside = (bits >= bounds[j]) & (bits < bounds[j + 1])
        for w in range(n_words):
            chunk = inside[w * word_bits : (w + 1) * word_bits]
            masks[j, w] = int(np.sum(chunk.astype(object) << np.arange(word_bits).astype(object)))
    return masks


@dataclass
class Probe:
    """Everything the kernel reads, in numba's typed containers (built once per search)."""

    bounds: np.ndarray
    starts: np.ndarray
    rows: List  # per segment
    runs: List
    dirs: List  # per segment and substring
    ids: List
    keys: List
    codes: List
    shifts: np.ndarray

    @classmethod
    def of(cls, index: MultiIndex) -> "Probe":
        typed = [List() for _ in range(6)]
        for segment in index.segments:
            typed[0].append(segment.rows)
            typed[1].append(segment.runs)
            for j in range(len(index.bounds) - 1):
                typed[2].append(segment.directories[j])
                typed[3].append(segment.ids[j])
                typed[4].append(segment.keys[j])
                typed[5].append(segment.codes[j].reshape(-1))  # a view: they are contiguous
        return cls(
            index.bounds,
            np.array([s.start for s in index.segments], np.int64),
            *typed,
            np.array([x for s in index.segments for x in s.shifts], np.int64),
        )

    def search(
        self, queries, values, budget: int, out_d, out_i, stats, threads: int, stage: int = 2,
        last_steps=None,
    ):  # fmt: skip
        """search_queries over slices of the queries on `threads` threads (it releases the GIL).

        out_d, out_i [Q, k] get the answers (slots past the database's rows are left as they
        are); stats [Q, 4] the counters of `_search_one`, its work -1 where it passed `budget`
        (>= 0; -1: no budget). stage < 2 and last_steps are for profiling.
        """
        n = len(queries)
        step = max(1, -(-n // (threads * TASKS_PER_THREAD)))
        masks = substring_masks(self.bounds, queries.shape[1], queries.itemsize * 8)
        masks = masks.astype(queries.dtype)
        stats[:] = 0
        if last_steps is None:
            last_steps = np.full(n, -1, np.int64)

        def run(lo: int) -> None:
            hi = lo + step
            limits = np.array([budget, PROBE_COST, check_cost(queries.shape[1])], np.int64)
            search_queries(
                queries[lo:hi], values[lo:hi], self.bounds, masks, self.starts, self.rows,
                self.runs, self.dirs, self.ids, self.keys, self.codes, self.shifts, out_d[lo:hi],
                out_i[lo:hi],
                stats[lo:hi], limits, stage, last_steps[lo:hi],
            )  # fmt: skip

        if threads == 1 or n <= step:
            for lo in range(0, n, step):
                run(lo)
            return
        with ThreadPoolExecutor(threads) as pool:
            for done in [pool.submit(run, lo) for lo in range(0, n, step)]:
                done.result()
