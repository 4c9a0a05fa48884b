"""Near-duplicate groups in a code store: `tbh duplicates --radius R`.

Two items are near duplicates when their codes differ in at most R bits. Groups are formed the
way a user deduplicates: walking the store in row order, the first item not yet in a group that
has ungrouped near duplicates starts a group (the one to keep) and takes all of them. So every
member is within R bits of its group's first item, and an item is in at most one group. (Grouping
by connected components instead would chain a~b~c~... into one large group of items far apart,
which low-bit codes do readily.)
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.storage.names import decode_name
from tbhcli.terminal import shown


@dataclass
class DuplicateGroup:
    """Store rows int64 [G] (ascending), their paths, and Hamming distances int [G] to rows[0]."""

    rows: np.ndarray
    paths: list[str]
    distances: np.ndarray


SMALL_JOIN = 4096  # below this many codes, pairs come from a numpy block join (no numba)
JOIN_BLOCK = 256  # rows of the block join's distance table at a time


def _leaders(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Group of each row, int64 [N]: its group's first row, or -1 outside every group.

    (first[k], second[k]) are the pairs within the radius. Only rows with a neighbour can start
    or join a group, so the walk visits those alone, in row order (module doc); rows before i
    within the radius are always grouped by then: they would have taken i.
    """
    sources, targets = np.concatenate([first, second]), np.concatenate([second, first])
    order = np.argsort(sources, kind="stable")
    sources, targets = sources[order].tolist(), targets[order].tolist()
    group = [-1] * n
    k = 0
    while k < len(sources):
        i, stop = sources[k], k
        while stop < len(sources) and sources[stop] == i:
            stop += 1
        if group[i] == -1:
            for j in targets[k:stop]:
                if group[j] == -1:
                    group[j] = i
                    group[i] = i
        k = stop
    return np.array(group, np.int64)


def self_join(codes: np.ndarray, radius: int, threads: int | None = None):
    """Every pair (i, j), i < j, int64 [P] of codes uint8 [N, B] within `radius` bits:
    `tbhcli.search.near_pairs` for large N; for small folders a plain block join, which saves
    the command the start-up of numba's kernels."""
    if len(codes) > SMALL_JOIN or threads is not None:
        from tbhcli.search import near_pairs

        return near_pairs(codes, radius, threads)
    if radius < 0:
        raise TbhError(f"--radius must be 0 or more bits (got {radius}).")
    firsts, seconds = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, len(codes), JOIN_BLOCK):
        block = codes[start : start + JOIN_BLOCK]
        dist = np.bitwise_count(block[:, None, :] ^ codes[None, start:, :]).sum(axis=2)
        i, j = np.nonzero(dist <= radius)  # (b, N - start): j is offset by start
        later = j > i
        firsts.append(i[later] + start)
        seconds.append(j[later] + start)
    return np.concatenate(firsts), np.concatenate(seconds)


MIRROR_RADIUS = 24  # bits for a mirrored / rotated match: bench/dedup_quality.py --mirror


def variant_distances(
    codes: np.ndarray, i: np.ndarray, j: np.ndarray, variants: int, radius: int
) -> np.ndarray:
    """Bits int [P] between rows i and j of codes uint8 [N, V * B] holding V variants per row
    (variant 0: the image itself, then mirrored and rotated versions). The own codes' distance
    when it is within `radius`; else the least distance between one's own code and the other's
    turned versions, which counts only within `MIRROR_RADIUS` (symmetric textures make distinct
    pictures closer under some symmetry); else `radius + 1`. With V = 1: Hamming distance."""
    width = codes.shape[1] // variants
    own = np.bitwise_count(codes[i, :width] ^ codes[j, :width]).sum(axis=1)
    if variants == 1:
        return own
    all_i = codes[i].reshape(len(i), variants, width)[:, 1:]
    all_j = codes[j].reshape(len(j), variants, width)[:, 1:]
    forward = np.bitwise_count(codes[i, None, :width] ^ all_j).sum(axis=2).min(axis=1)
    backward = np.bitwise_count(codes[j, None, :width] ^ all_i).sum(axis=2).min(axis=1)
    turned = np.minimum(forward, backward)
    limit = min(radius, MIRROR_RADIUS)
    return np.where(own <= radius, own, np.where(turned <= limit, turned, radius + 1))


def near_variant_pairs(codes: np.ndarray, radius: int, variants: int, threads: int | None):
    """Pairs (i, j), i < j, int64 [P] of rows within `radius` bits (`variant_distances`)."""
    if variants == 1:
        return self_join(codes, radius, threads)
    n, width = len(codes), codes.shape[1] // variants
    first, second = self_join(codes.reshape(n * variants, width), radius, threads)
    i, j = np.minimum(first, second) // variants, np.maximum(first, second) // variants
    pairs = np.unique(np.stack([i[i != j], j[i != j]], axis=1), axis=0).reshape(-1, 2)
    keep = variant_distances(codes, pairs[:, 0], pairs[:, 1], variants, radius) <= radius
    return pairs[keep, 0], pairs[keep, 1]


def group_codes(
    codes: np.ndarray,
    paths: list[str],
    radius: int,
    threads: int | None = None,
    variants: int = 1,
) -> list[DuplicateGroup]:
    """Groups of rows of codes uint8 [N, V * B] within `radius` bits of their group's first
    row; with `variants` V > 1 each row also holds the codes of V - 1 mirrored or rotated
    versions of its image (`variant_distances`)."""
    first, second = near_variant_pairs(codes, radius, variants, threads)
    group = _leaders(len(codes), first, second)
    grouped = np.flatnonzero(group >= 0)
    grouped = grouped[np.argsort(group[grouped], kind="stable")]  # by group, then by row
    starts = np.flatnonzero(np.diff(group[grouped], prepend=-2))[1:]
    groups = []
    for rows in np.split(grouped, starts) if len(grouped) else []:
        leader = np.full(len(rows), rows[0])
        distances = variant_distances(codes, leader, rows, variants, radius)
        groups.append(DuplicateGroup(rows, [paths[r] for r in rows], distances))
    return groups


@dataclass
class StoreRows:
    """The rows of a store that name a file inside its root, and why the others were left out."""

    rows: np.ndarray  # int64 [K], ascending
    outside: list[str]  # stored paths that leave the root (../x, absolute, a link out of it)
    missing: list[str]  # stored paths whose file no longer exists
    changed: list[str] = field(default_factory=list)  # files changed since their code was stored
    root: Path | None = None
    codes: np.ndarray | None = None  # uint8 [N, B], every row of the store
    names: list[str] | None = None  # file name of every row


def usable_rows(paths: list[str], root: Path, changed: frozenset[str] = frozenset()) -> StoreRows:
    """Rows whose file exists, lies inside `root` once links are resolved and is not in
    `changed` (issue 20: a remove list names only files of the folder that still exist, by
    their current picture)."""
    real_root = Path(root).resolve()
    rows, outside, missing, stale = [], [], [], []
    for row, name in enumerate(paths):
        file = Path(root) / name
        leaves = Path(name).is_absolute() or ".." in Path(name).parts
        if leaves or not file.resolve().is_relative_to(real_root):
            outside.append(name)
        elif not file.exists():
            missing.append(name)
        elif name in changed:
            stale.append(name)
        else:
            rows.append(row)
    return StoreRows(np.array(rows, np.int64), outside, missing, stale)


def _read_store(store: str | Path | None):
    """(table, codes uint8 [N, B], file names) of a non-empty store (zarr imported here only)."""
    from tbhcli.storage.store import open_store
    from tbhcli.workspace import resolve_store

    table = open_store(resolve_store(store))
    codes = table.read_codes()  # uint8 [N, bits/8]; a self-join needs them all at hand
    if not len(codes):
        raise TbhError(f"store {table.path} is empty; index images with `tbh index IMAGES_DIR`.")
    return table, codes, [decode_name(str(p)) for p in table.paths]


def group_store(
    store: str | Path | None = None, radius: int = 2, threads: int | None = None
) -> list[DuplicateGroup]:
    """Groups of store items within `radius` bits of their group's first item (module doc).

    Every row is grouped as stored; `store_duplicates` leaves out files gone or outside the root.
    """
    _, codes, names = _read_store(store)
    return group_codes(codes, names, radius, threads)


def store_duplicates(
    store: str | Path | None,
    radius: int,
    threads: int | None = None,
    changed: frozenset[str] = frozenset(),
) -> tuple[list[DuplicateGroup], StoreRows]:
    """Groups among the store's rows whose file exists inside the store's root, and those rows
    (with the store's root, codes and names). Group rows are store rows."""
    table, codes, names = _read_store(store)
    usable = usable_rows(names, table.root, changed)
    groups = group_codes(codes[usable.rows], [names[r] for r in usable.rows], radius, threads)
    for group in groups:
        group.rows = usable.rows[group.rows]
    usable.root, usable.codes, usable.names = table.root, codes, names
    return groups, usable


def groups_table(groups: list[DuplicateGroup], kept: list[int | None] | None = None):
    """A rich table: one block of rows per group; the kept file (`kept[g]`, a position in group
    g; default: none marked) in bold and marked "keep"."""
    from rich.table import Table

    table = Table(
        "group", "keep", "distance", "path", title=f"{len(groups)} groups of near duplicates"
    )
    for number, group in enumerate(groups, 1):
        keep = kept[number - 1] if kept is not None else None
        for i, (path, distance) in enumerate(zip(group.paths, group.distances, strict=True)):
            table.add_row(
                str(number) if i == 0 else "",
                "keep" if i == keep else "",
                str(distance),
                shown(path),
                style="bold" if i == keep else None,
                end_section=i == len(group.paths) - 1,
            )
    return table
