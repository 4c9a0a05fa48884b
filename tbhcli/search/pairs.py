"""Every pair of codes within a radius (a self-join), exactly: for `tbh duplicates`.

Finding all pairs within R is a self-join. Multi-index hashing makes it fast when codes spread
out: split each code into m >= R + 1 disjoint bit ranges; two codes within R bits agree exactly
on at least one range (pigeonhole), so only pairs sharing a range value are candidates, each
checked by its full distance. When the ranges' buckets are too crowded for that to pay (codes
that cluster, or a large R), an exact brute-force scan (`tbhcli.search.radius_search`) does it.
"""

import numpy as np
from numba import njit

from tbhcli.errors import TbhError
from tbhcli.hamming.blocks import as_words, check_threads
from tbhcli.hamming.kernels import popcount
from tbhcli.search.api import radius_search

QUERY_BATCH = 8192  # store rows searched against the store at a time: bounds the match lists
KEY_ROWS = 1 << 20  # rows unpacked to bits at a time while cutting codes into ranges
SCAN_COST = 30  # a candidate pair costs about as much as this many vectorised scan distances


def _range_keys(codes: np.ndarray, n_ranges: int) -> np.ndarray:
    """Each code cut into n_ranges disjoint bit ranges of <= 64 bits: uint64 keys [n_ranges, N]."""
    bits = codes.shape[1] * 8
    bounds = np.linspace(0, bits, n_ranges + 1).round().astype(int)
    keys = np.empty((n_ranges, len(codes)), np.uint64)
    for start in range(0, len(codes), KEY_ROWS):
        unpacked = np.unpackbits(codes[start : start + KEY_ROWS], axis=1)  # (rows, bits)
        padded = np.zeros((len(unpacked), 64), np.uint8)
        for r in range(n_ranges):
            width = bounds[r + 1] - bounds[r]
            padded[:, : 64 - width] = 0
            padded[:, 64 - width :] = unpacked[:, bounds[r] : bounds[r + 1]]
            keys[r, start : start + len(unpacked)] = np.packbits(padded, axis=1).view(">u8")[:, 0]
    return keys


@njit(cache=True, nogil=True)
def _bucket_pairs(words, keys, orders, below, out_first, out_second):
    """Pairs (i < j) at distance < below among rows sharing a range key; returns their count.

    orders [m, N] sorts each range's keys [m, N]. A pair is taken in the first range where the two
    rows agree, so it comes out once. With out arrays None, only counts.
    """
    n_ranges, n = keys.shape
    found = 0
    for r in range(n_ranges):
        order = orders[r]
        start = 0
        while start < n:
            end = start + 1
            while end < n and keys[r, order[end]] == keys[r, order[start]]:
                end += 1
            for a in range(start, end):
                for b in range(a + 1, end):
                    i, j = min(order[a], order[b]), max(order[a], order[b])
                    earlier = False
                    for t in range(r):
                        earlier |= keys[t, i] == keys[t, j]
                    if earlier:
                        continue
                    distance = popcount(words[i, 0] ^ words[j, 0])
                    for w in range(1, words.shape[1]):
                        distance += popcount(words[i, w] ^ words[j, w])
                    if distance < below:
                        if out_first is not None:
                            out_first[found] = i
                            out_second[found] = j
                        found += 1
            start = end
    return found


def _multi_index_pairs(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Pairs (i < j) within radius by multi-index hashing, or None when a scan is cheaper."""
    n, bits = len(codes), codes.shape[1] * 8
    n_ranges = max(radius + 1, -(-bits // 64))
    if n_ranges > bits:
        return None
    keys = _range_keys(codes, n_ranges)
    orders = np.argsort(keys, axis=1, kind="stable")
    candidates = 0
    for r in range(n_ranges):
        _, sizes = np.unique(keys[r], return_counts=True)
        candidates += int((sizes * (sizes - 1) // 2).sum())
    if candidates * SCAN_COST > n * (n - 1) // 2:
        return None
    words = as_words(codes)
    below = words.dtype.type(radius + 1)
    pairs = np.empty((2, _bucket_pairs(words, keys, orders, below, None, None)), np.int64)
    _bucket_pairs(words, keys, orders, below, pairs[0], pairs[1])
    return pairs[0], pairs[1]


def _scan_pairs(codes: np.ndarray, radius: int, threads: int | None):
    """Pairs (i < j) within radius by an exact radius search of every row, QUERY_BATCH at a time."""
    firsts, seconds = [], []
    for start in range(0, len(codes), QUERY_BATCH):
        found = radius_search(codes, codes[start : start + QUERY_BATCH], radius, threads=threads)
        ids = np.concatenate([ids for _, ids in found])
        rows = np.repeat(np.arange(start, start + len(found)), [len(i) for _, i in found])
        later = ids > rows  # each pair once; every row also finds itself
        firsts.append(rows[later])
        seconds.append(ids[later])
    return np.concatenate(firsts), np.concatenate(seconds)


def near_pairs(codes: np.ndarray, radius: int, threads: int | None = None):
    """Every pair of rows of codes uint8 [N, B] within `radius` bits: (i, j) int64 [P], i < j."""
    if radius < 0:
        raise TbhError(f"--radius must be 0 or more bits (got {radius}).")
    check_threads(threads)  # checked here too: the multi-index path does not use it
    return _multi_index_pairs(codes, radius) or _scan_pairs(codes, radius, threads)
