"""Near-duplicate groups in a code store: `tbh duplicates --radius R`.

Two items are near duplicates when their codes differ in at most R bits. A group is a connected
component of that relation (what dedup tools hand a user to review: "these images are copies of
each other"), so with a large R a chain a~b~c can group a and c even when they differ in more
than R bits; each item's distance to the group's first item shows how far it drifted. Groups are
ordered by their first (lowest) store row, members by row. The search is an exact radius
self-join (`tbhcli.search.radius_search`) over the store's codes in batches of queries.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from tbhcli.search import radius_search
from tbhcli.store import open_store
from tbhcli.workspace import resolve_store

QUERY_BATCH = 8192  # store rows searched against the store at a time: bounds the match lists


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
def _components(n: int, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Union-find over edges: int64 [n], each row's component named by its lowest row."""
    parent = np.arange(n)
    for e in range(sources.shape[0]):
        a, b = sources[e], targets[e]
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a != b:
            parent[max(a, b)] = min(a, b)
    for i in range(n):  # parents are lower rows, so one forward pass resolves every root
        parent[i] = parent[parent[i]]
    return parent


def duplicates(
    store: str | Path | None = None, radius: int = 2, threads: int | None = None
) -> list[DuplicateGroup]:
    """Groups of store items whose codes lie within `radius` bits of each other (see module doc)."""
    table = open_store(resolve_store(store))
    codes = table.read_codes()  # uint8 [N, bits/8]; a self-join is N^2 work, N codes fit in memory
    sources, targets = [], []
    for start in range(0, len(codes), QUERY_BATCH):
        found = radius_search(codes, codes[start : start + QUERY_BATCH], radius, threads=threads)
        counts = [len(ids) for _, ids in found]
        sources.append(np.repeat(np.arange(start, start + len(found)), counts))
        targets.append(np.concatenate([ids for _, ids in found]))
    sources, targets = np.concatenate(sources), np.concatenate(targets)
    keep = targets > sources  # each pair once, no self matches
    labels = _components(len(codes), sources[keep], targets[keep])
    sizes = np.bincount(labels, minlength=len(codes))
    grouped = np.flatnonzero(sizes[labels] > 1)  # rows in groups, ascending
    if not len(grouped):
        return []
    paths = table.paths
    groups = []
    for rows in np.split(
        grouped[np.argsort(labels[grouped], kind="stable")],
        np.cumsum(sizes[np.unique(labels[grouped])])[:-1],
    ):
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
