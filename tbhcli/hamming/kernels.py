"""Numba kernels: Hamming top-k and radius scans over packed codes, exact by (distance, row).

Codes arrive as unsigned words [N, W] (uint64, or uint32 for 32-bit codes): a view of the packed
bytes, so popcount(a ^ b) summed over words is the Hamming distance. The database is scanned in
tiles of `TILE` rows, transposed to [W, TILE] so that the per-query loop is a contiguous
XOR + popcount + compare that LLVM vectorises (AVX-512 VPOPCNTQ where the CPU has it). A tile stays
in L1 while a block of queries runs over it, so the database streams from memory once per block.

Top-k keeps, per query, a buffer of candidates in row order and a threshold: a row is a candidate
only if its distance is *below* the threshold. When the buffer passes 2k entries, a histogram over
the (small integer) distances finds the k-th smallest distance t; the buffer keeps every entry
below t and the earliest entries at t (ties go to the lower row, and rows arrive in order), and
the threshold becomes t, since a later row at distance t would lose every tie. Most tiles have no
row under the threshold and cost only the vector loop.

The kernels are serial and release the GIL: `tbhcli.hamming.blocks` runs them on a thread pool,
one task per (query block, row range).
"""

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

TILE = 1024  # rows per tile: a tile and its distances stay in L1/L2 while a query block runs
SUB = 64  # rows per stretch that a scan tests for candidates before looking at rows one by one
NEVER = 0xFFFFFFFF  # distance of the unused slots of a tile: above every threshold


@intrinsic
def popcount(typingctx, x):
    """llvm.ctpop on an unsigned integer (numba has no popcount of its own)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, args)

    return x(x), codegen


@njit(cache=True, nogil=True)
def max_distance(db):
    """Bits per code of words [N, W]; distances lie in [0, max_distance]."""
    return db.shape[1] * db.itemsize * 8


@njit(cache=True, nogil=True)
def _load_tile(db, start, n, tile):
    """Copy rows [start, start + n) of db [N, W] into tile [W, TILE], words first."""
    rows = db[start : start + n]
    for i in range(n):
        for w in range(db.shape[1]):
            tile[w, i] = rows[i, w]


@njit(cache=True, nogil=True)
def _tile_distances(tile, n, query, dist, below):
    """Distances of the tile's first n rows to query [W] into dist [TILE // SUB, SUB]; returns
    how many are < below.

    The count is fused into the last word's loop (one vector compare-and-add per row): most tiles
    have no candidate, and a separate counting pass cost as much as the distances themselves
    (bench/scan_profile.py). Slots past n get a distance no threshold accepts.
    """
    flat = dist.reshape(TILE)
    last = tile.shape[0] - 1
    hits = 0
    if last == 0:
        row = tile[0]
        word = query[0]
        for i in range(n):
            d = popcount(row[i] ^ word)
            flat[i] = d
            hits += d < below
    else:
        row = tile[0]
        word = query[0]
        for i in range(n):
            flat[i] = popcount(row[i] ^ word)
        for w in range(1, last):
            row = tile[w]
            word = query[w]
            for i in range(n):
                flat[i] += popcount(row[i] ^ word)
        row = tile[last]
        word = query[last]
        for i in range(n):
            d = flat[i] + popcount(row[i] ^ word)
            flat[i] = d
            hits += d < below
    flat[n:] = NEVER
    return hits


@njit(cache=True, nogil=True)
def _count_below(stretch, below):
    """How many of stretch [SUB] are < below: a vectorised compare-and-count.

    A whole row of a C array, indexed from 0: numba's indexing from an offset would gather.
    """
    hits = 0
    for i in range(stretch.shape[0]):
        hits += stretch[i] < below
    return hits


@njit(cache=True, nogil=True)
def _keep_best(dists, ids, count, k, hist):
    """Shrink a row-ordered candidate buffer to its k best by (distance, row), in place.

    Needs count >= k. Returns (new count, k-th smallest distance).
    """
    hist[:] = 0
    for j in range(count):
        hist[dists[j]] += 1
    kth = 0
    below = 0
    while below + hist[kth] < k:
        below += hist[kth]
        kth += 1
    room = k - below  # how many of the rows at distance kth still fit
    kept = 0
    for j in range(count):
        d = dists[j]
        if d < kth or (d == kth and room > 0):
            room -= d == kth
            dists[kept] = d
            ids[kept] = ids[j]
            kept += 1
    return kept, kth


@njit(cache=True, nogil=True)
def _sort_by_distance(dists, ids, count, hist, out_dists, out_ids):
    """Stable counting sort of `count` row-ordered entries by distance into the out arrays."""
    hist[:] = 0
    for j in range(count):
        hist[dists[j] + 1] += 1
    for d in range(1, hist.shape[0]):
        hist[d] += hist[d - 1]
    for j in range(count):
        slot = hist[dists[j]]
        hist[dists[j]] += 1
        if slot < out_dists.shape[0]:
            out_dists[slot] = dists[j]
            out_ids[slot] = ids[j]


@njit(cache=True, nogil=True)
def scan_topk(db, queries, start, stop, k, first_id, out_dists, out_ids):
    """Top-k of queries [B, W] over rows [start, stop) of db into out [B, k] (by distance, row).

    Rows are numbered from first_id; out slots past stop - start rows are left as they are.
    """
    n_queries = queries.shape[0]
    top = max_distance(db)
    capacity = 2 * k + TILE
    dists = np.empty((n_queries, capacity), np.int32)
    ids = np.empty((n_queries, capacity), np.int64)
    count = np.zeros(n_queries, np.int64)
    # the threshold has the words' dtype so the vector compare stays in integers
    below = np.full(n_queries, top + 1, db.dtype)
    hist = np.zeros(top + 2, np.int64)
    tile = np.empty((db.shape[1], TILE), db.dtype)
    dist = np.empty((TILE // SUB, SUB), db.dtype)
    for tile_start in range(start, stop, TILE):
        n = min(TILE, stop - tile_start)
        _load_tile(db, tile_start, n, tile)
        for a in range(n_queries):
            limit = below[a]
            if _tile_distances(tile, n, queries[a], dist, limit) == 0:
                continue  # the common case once the threshold settles
            c = count[a]
            for b in range((n + SUB - 1) // SUB):
                stretch = dist[b]
                if _count_below(stretch, limit) == 0:
                    continue
                for j in range(SUB):
                    if stretch[j] < limit:
                        dists[a, c] = stretch[j]
                        ids[a, c] = first_id + tile_start + b * SUB + j
                        c += 1
            if c > 2 * k:
                c, kth = _keep_best(dists[a], ids[a], c, k, hist)
                below[a] = kth
            count[a] = c
    for a in range(n_queries):
        c = count[a]
        if c > k:
            c, _ = _keep_best(dists[a], ids[a], c, k, hist)
        _sort_by_distance(dists[a], ids[a], c, hist, out_dists[a], out_ids[a])


@njit(cache=True, nogil=True)
def merge_parts(dists, ids, k, top, out_dists, out_ids):
    """Merge per-part top-k lists [P, B, K] (parts in row order) into out [B, k].

    A stable counting sort by distance over the parts in order keeps ties in row order, because
    each part is sorted by (distance, row) and covers rows after the previous part's. Distances
    lie in [0, top + 1] (top + 1 marks padding).
    """
    n_parts, n_queries, width = dists.shape
    flat_dists = np.empty(n_parts * width, np.int32)
    flat_ids = np.empty(n_parts * width, np.int64)
    hist = np.zeros(top + 3, np.int64)
    for q in range(n_queries):
        for part in range(n_parts):
            flat_dists[part * width : (part + 1) * width] = dists[part, q]
            flat_ids[part * width : (part + 1) * width] = ids[part, q]
        _sort_by_distance(flat_dists, flat_ids, n_parts * width, hist, out_dists[q], out_ids[q])


@njit(cache=True, nogil=True)
def scan_radius(db, queries, start, stop, below, first_id, counts, offsets, out_dists, out_ids):
    """Rows of [start, stop) at distance < below from each query [B, W], in row order.

    Adds the match counts to counts [B]; with offsets [B] given, also writes query a's matches to
    out_dists / out_ids from offsets[a] on. `below` (radius + 1) has the words' dtype.
    """
    tile = np.empty((db.shape[1], TILE), db.dtype)
    dist = np.empty((TILE // SUB, SUB), db.dtype)
    for tile_start in range(start, stop, TILE):
        n = min(TILE, stop - tile_start)
        _load_tile(db, tile_start, n, tile)
        for a in range(queries.shape[0]):
            if _tile_distances(tile, n, queries[a], dist, below) == 0:
                continue
            for b in range((n + SUB - 1) // SUB):
                stretch = dist[b]
                hits = _count_below(stretch, below)
                if offsets is not None and hits:
                    at = offsets[a]
                    for j in range(SUB):
                        if stretch[j] < below:
                            out_dists[at] = stretch[j]
                            out_ids[at] = first_id + tile_start + b * SUB + j
                            at += 1
                    offsets[a] = at
                counts[a] += hits


@njit(cache=True, nogil=True)
def sort_segments(offsets, dists, ids, top):
    """Sort each query's segment [offsets[q], offsets[q + 1]) of row-ordered matches by distance."""
    hist = np.zeros(top + 3, np.int64)
    for q in range(offsets.shape[0] - 1):
        lo, hi = offsets[q], offsets[q + 1]
        seg_dists = dists[lo:hi].copy()
        seg_ids = ids[lo:hi].copy()
        _sort_by_distance(seg_dists, seg_ids, hi - lo, hist, dists[lo:hi], ids[lo:hi])
