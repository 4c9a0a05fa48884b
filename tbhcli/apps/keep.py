"""Which member of a duplicate group to keep, and the list of the others: `--keep`, `--to-remove`.

tbh never deletes or moves a file; it writes the paths a user may remove. The list never loses a
picture (issue 20): the kept file is always a regular file, never a symbolic link (removing a
link loses nothing; removing a link's target while keeping the link would), and a group with no
regular file lists nothing. Paths are written one per line, or NUL-separated with `null=True`
(as `find -print0`); a path holding a line break or another control character is refused in the
line format, since it would read as two paths.

Policies: `original` (default) keeps the file most likely to be the untransformed original: the
group's medoid (the smallest sum of distances to the others between the DCT coefficients of the
thumbnails that the photo code is made from: each copy is one edit away from the original, two
copies are two edits apart), among equal ones the oldest (a copy is made after its original),
then the largest resolution and file; `largest` the largest resolution, then the largest file;
`first` the first path (store order); `newest` / `oldest` by modification time. Ties go to the
first path; unreadable or missing files rank last.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tbhcli.apps.duplicates import DuplicateGroup
from tbhcli.atomic import write_bytes_atomic
from tbhcli.errors import TbhError, option
from tbhcli.terminal import printable

KEEP_POLICIES = ("original", "largest", "first", "newest", "oldest")


@dataclass
class Member:
    """One file of a group: store row, path (relative to the store root), file, size, distance."""

    row: int
    path: str
    file: Path
    distance: int
    width: int | None  # None: missing or unreadable
    height: int | None
    bytes: int | None
    mtime: float | None
    regular: bool = False  # a regular file, not a symbolic link (only these are kept)
    spread: float = 0.0  # sum of distances to the other members (`original` policy)

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    def to_dict(self) -> dict:
        return {
            "row": self.row,
            "path": self.path,
            "file": str(self.file),
            "distance": self.distance,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "link": self.file.is_symlink(),
        }


def member(row: int, path: str, file: Path, distance: int) -> Member:
    """Read the size of `file` from its header (no full decode)."""
    try:
        stat = file.stat()
    except OSError:
        return Member(row, path, file, distance, None, None, None, None)
    regular = not file.is_symlink() and file.is_file()
    try:
        with Image.open(file) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        width = height = None
    return Member(row, path, file, distance, width, height, stat.st_size, stat.st_mtime, regular)


def check_keep(keep: str) -> str:
    if keep not in KEEP_POLICIES:
        choices = ", ".join(KEEP_POLICIES)
        raise TbhError(f"unknown {option('keep')} {keep!r}; choose one of {choices}.")
    return keep


def kept_index(members: list[Member], keep: str = "original") -> int | None:
    """Position of the regular file to keep under policy `keep` (module doc); None when the group
    holds no regular file (then nothing of it is listed). Ties -> first path."""
    check_keep(keep)
    order = [i for i, m in enumerate(members) if m.regular]
    if not order:
        return None
    if keep == "first":
        return order[0]
    size = lambda i: (-members[i].pixels, -(members[i].bytes or -1))  # noqa: E731
    if keep == "original":
        least = min(members[i].spread for i in order)
        order = [i for i in order if members[i].spread <= least * (1 + 1e-6) + 1e-9]
        return min(order, key=lambda i: (members[i].mtime, *size(i), i))
    if keep == "largest":
        return min(order, key=lambda i: (*size(i), i))
    sign = -1 if keep == "newest" else 1
    return min(order, key=lambda i: (sign * members[i].mtime, i))


@dataclass
class Decision:
    """A group with its members described and the one to keep chosen."""

    members: list[Member]
    kept: int | None  # None: no regular file in the group, nothing listed

    @property
    def to_remove(self) -> list[Member]:
        if self.kept is None:
            return []
        return [m for i, m in enumerate(self.members) if i != self.kept]

    def to_dict(self) -> dict:
        items = [m.to_dict() | {"keep": i == self.kept} for i, m in enumerate(self.members)]
        kept = None if self.kept is None else self.members[self.kept].path
        return {"kept": kept, "items": items}


def spreads(files: list[Path]) -> np.ndarray:
    """Per file, the sum of Euclidean distances float [G] between its thumbnail's DCT
    coefficients and the others' (`original` policy); inf for a file that does not decode."""
    from tbhcli.hashing.perceptual import dct_coefficients
    from tbhcli.imaging.images import ImageDecodeError
    from tbhcli.imaging.thumbnails import gray_thumbnail

    thumbs, ok = [], []
    for file in files:
        try:
            thumbs.append(gray_thumbnail(file))
            ok.append(True)
        except (ImageDecodeError, OSError):
            ok.append(False)
    out = np.full(len(files), np.inf)
    if thumbs:
        c = dct_coefficients(np.stack(thumbs), 128)  # (G, 128): finer than the code's 64
        out[np.array(ok)] = np.linalg.norm(c[:, None] - c[None], axis=2).sum(axis=1)
    return out


def decide(groups: list[DuplicateGroup], root: Path, keep: str = "original") -> list[Decision]:
    """Describe each group's files under `root` and choose the one to keep."""
    check_keep(keep)
    decisions = []
    for group in groups:
        members = [
            member(int(r), p, Path(root) / p, int(d))
            for r, p, d in zip(group.rows, group.paths, group.distances, strict=True)
        ]
        if keep == "original":
            for m, spread in zip(members, spreads([m.file for m in members]), strict=True):
                m.spread = float(spread)
        decisions.append(Decision(members, kept_index(members, keep)))
    return decisions


def decisions_json(decisions: list[Decision], found) -> str:
    """The `tbh.duplicates/1` document: what was grouped and left out (`FolderDuplicates.to_dict`:
    root, radius, images, store, skipped, missing, outside) and the groups, each {"kept": path,
    "items": [{row, path, ..., keep}]} (docs/usage.md)."""
    from tbhcli.jsondoc import document

    body = found.to_dict() | {"groups": [d.to_dict() for d in decisions]}
    return document("duplicates", body)


def write_to_remove(decisions: list[Decision], out: Path, null: bool = False) -> int:
    """Write every member but the kept one: one path a line, or NUL-terminated with `null`;
    returns how many. A path with a control character is refused in the line format."""
    files = [str(m.file) for d in decisions for m in d.to_remove]
    if not null:
        for file in files:
            if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in file):
                raise TbhError(
                    f"{printable(file)} holds a line break or control character, so a list of "
                    "one path a line would misread it; pass --null for a NUL-separated list."
                )
    end = "\0" if null else "\n"
    write_bytes_atomic(out, b"".join(os.fsencode(f) + end.encode() for f in files))
    return len(files)
