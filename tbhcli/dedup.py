"""Near-duplicate groups in a code store: `tbh duplicates --radius R`.

Two items are near duplicates when their codes differ in at most R bits. Groups are formed the
way a user deduplicates: walking the store in row order, the first item not yet in a group that
has ungrouped near duplicates starts a group (the one to keep) and takes all of them. So every
member is within R bits of its group's first item, and an item is in at most one group. (Grouping
by connected components instead would chain a~b~c~... into one large group of items far apart,
which low-bit codes do readily.)

Finding all pairs within R is a self-join. Multi-index hashing makes it fast when codes spread
out: split each code into m >= R + 1 disjoint bit ranges; two codes within R bits agree exactly
on at least one range (pigeonhole), so only pairs sharing a range value are candidates, each
checked by its full distance. When the ranges' buckets are too crowded for that to pay (codes
that cluster, or a large R), an exact brute-force scan (`tbhcli.search.radius_search`) does it.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from tbhcli.errors import TbhError
from tbhcli.search import as_words, check_threads, radius_search
from tbhcli.search.kernels import popcount
from tbhcli.store import open_store
from tbhcli.workspace import resolve_store

QUERY_BATCH = 8192  # store rows searched against the store at a time: bounds the match lists
KEY_ROWS = 1 << 20  # rows unpacked to bits at a time while cutting codes into ranges
SCAN_COST = 30  # a candidate pair costs about as much as this many vectorised scan distances


@dataclass
class DuplicateGroup:
    """Store rows int64 [G] (ascending), their paths, and Hamming distances int [G] to rows[0]."""

    rows: np.ndarray
    paths: list[str]
    distances: np.ndarray

    def to_dict(self) -> dict:
        return {
            "items": [
                {"row": int(r), "path": p, "distance": int(d)}
                for r, p, d in zip(self.rows, self.paths, self.distances, strict=True)
            ]
        }


@njit(cache=True)
def _leaders(offsets: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Group of each row, int64 [N]: its group's first row, or -1 outside every group.

    neighbours[offsets[i]:offsets[i + 1]] are the rows within the radius of row i (not i).
    Rows before i within the radius are always grouped by then: they would have taken i.
    """
    n = offsets.shape[0] - 1
    group = np.full(n, -1, np.int64)
    for i in range(n):
        if group[i] != -1:
            continue
        for j in neighbours[offsets[i] : offsets[i + 1]]:
            if group[j] == -1:
                group[j] = i
                group[i] = i
    return group


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


def duplicates(
    store: str | Path | None = None, radius: int = 2, threads: int | None = None
) -> list[DuplicateGroup]:
    """Groups of store items within `radius` bits of their group's first item (module doc)."""
    table = open_store(resolve_store(store))
    codes = table.read_codes()  # uint8 [N, bits/8]; a self-join needs them all at hand
    if not len(codes):
        raise TbhError(f"store {table.path} is empty; index images with `tbh index IMAGES_DIR`.")
    first, second = near_pairs(codes, radius, threads)
    sources, targets = np.concatenate([first, second]), np.concatenate([second, first])
    order = np.argsort(sources, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(sources, minlength=len(codes)))])
    group = _leaders(offsets, targets[order])
    grouped = np.flatnonzero(group >= 0)
    grouped = grouped[np.argsort(group[grouped], kind="stable")]  # by group, then by row
    starts = np.flatnonzero(np.diff(group[grouped], prepend=-2))[1:]
    paths = table.paths
    groups = []
    for rows in np.split(grouped, starts) if len(grouped) else []:
        distances = np.bitwise_count(codes[rows] ^ codes[rows[0]]).sum(axis=1)
        groups.append(DuplicateGroup(rows, [str(paths[r]) for r in rows], distances))
    return groups


def groups_json(groups: list[DuplicateGroup]) -> str:
    return json.dumps([g.to_dict() for g in groups], indent=2)


def print_groups(groups: list[DuplicateGroup], console) -> None:
    """A rich table: one block of rows per group, the first item of each group in bold."""
    from rich.table import Table

    table = Table("group", "distance", "path", title=f"{len(groups)} groups of near duplicates")
    for number, group in enumerate(groups, 1):
        for i, (path, distance) in enumerate(zip(group.paths, group.distances, strict=True)):
            style = "bold" if i == 0 else None
            table.add_row(
                str(number) if i == 0 else "",
                str(distance),
                path,
                style=style,
                end_section=i == len(group.paths) - 1,
            )
    console.print(table)
