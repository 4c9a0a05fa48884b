"""Which member of a duplicate group to keep, and the list of the others: `--keep`, `--to-remove`.

tbh never deletes or moves a file; it writes the paths a user may remove, one per line.
Policies: `largest` (default) keeps the largest resolution, then the largest file, then the
first path; `first` the first path (store order); `newest` / `oldest` by modification time,
then the first path. Unreadable or missing files rank last.
"""

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tbhcli.apps.duplicates import DuplicateGroup
from tbhcli.errors import TbhError

KEEP_POLICIES = ("largest", "first", "newest", "oldest")


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
        }


def member(row: int, path: str, file: Path, distance: int) -> Member:
    """Read the size of `file` from its header (no full decode)."""
    try:
        stat = file.stat()
    except OSError:
        return Member(row, path, file, distance, None, None, None, None)
    try:
        with Image.open(file) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        width = height = None
    return Member(row, path, file, distance, width, height, stat.st_size, stat.st_mtime)


def check_keep(keep: str) -> str:
    if keep not in KEEP_POLICIES:
        raise TbhError(f"unknown --keep {keep!r}; choose one of {', '.join(KEEP_POLICIES)}.")
    return keep


def kept_index(members: list[Member], keep: str = "largest") -> int:
    """Position of the member to keep under policy `keep` (module doc); ties -> first path."""
    check_keep(keep)
    order = range(len(members))
    if keep == "first":
        return 0
    if keep == "largest":
        return min(order, key=lambda i: (-members[i].pixels, -(members[i].bytes or -1), i))
    sign = -1 if keep == "newest" else 1
    missing = float("inf")
    return min(
        order,
        key=lambda i: (sign * members[i].mtime if members[i].mtime is not None else missing, i),
    )


@dataclass
class Decision:
    """A group with its members described and the one to keep chosen."""

    members: list[Member]
    kept: int

    @property
    def to_remove(self) -> list[Member]:
        return [m for i, m in enumerate(self.members) if i != self.kept]

    def to_dict(self) -> dict:
        items = [m.to_dict() | {"keep": i == self.kept} for i, m in enumerate(self.members)]
        return {"kept": self.members[self.kept].path, "items": items}


def decide(groups: list[DuplicateGroup], root: Path, keep: str = "largest") -> list[Decision]:
    """Describe each group's files under `root` and choose the one to keep."""
    check_keep(keep)
    decisions = []
    for group in groups:
        members = [
            member(int(r), p, Path(root) / p, int(d))
            for r, p, d in zip(group.rows, group.paths, group.distances, strict=True)
        ]
        decisions.append(Decision(members, kept_index(members, keep)))
    return decisions


def decisions_json(decisions: list[Decision], store: Path, radius: int) -> str:
    """The `tbh.duplicates/1` document: store, radius and the groups, each {"kept": path,
    "items": [{row, path, ..., keep}]} (docs/usage.md)."""
    from tbhcli.jsondoc import document

    body = {"store": store, "radius": radius, "groups": [d.to_dict() for d in decisions]}
    return document("duplicates", body)


def write_to_remove(decisions: list[Decision], out: Path) -> int:
    """Write every member but the kept one, one file path per line; returns how many."""
    lines = [f"{m.file}\n" for d in decisions for m in d.to_remove]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines), encoding="utf-8")
    return len(lines)
