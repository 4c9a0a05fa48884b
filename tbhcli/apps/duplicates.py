"""Near-duplicate groups in a code store: `tbh duplicates --radius R`.

Two items are near duplicates when their codes differ in at most R bits. Groups are formed the
way a user deduplicates: walking the store in row order, the first item not yet in a group that
has ungrouped near duplicates starts a group (the one to keep) and takes all of them. So every
member is within R bits of its group's first item, and an item is in at most one group. (Grouping
by connected components instead would chain a~b~c~... into one large group of items far apart,
which low-bit codes do readily.)
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from tbhcli.errors import TbhError
from tbhcli.search import near_pairs
from tbhcli.storage.names import decode_name
from tbhcli.storage.store import open_store
from tbhcli.terminal import shown
from tbhcli.workspace import resolve_store


@dataclass
class DuplicateGroup:
    """Store rows int64 [G] (ascending), their paths, and Hamming distances int [G] to rows[0]."""

    rows: np.ndarray
    paths: list[str]
    distances: np.ndarray


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
        names = [decode_name(str(paths[r])) for r in rows]  # file names, as lookup gives them
        groups.append(DuplicateGroup(rows, names, distances))
    return groups


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
                shown(path),
                style=style,
                end_section=i == len(group.paths) - 1,
            )
    console.print(table)
