"""`tbh duplicates`, the verb: find the groups, choose the file to keep, write what was asked.

`duplicates(folder)` groups a photo folder (`apps.photos`), `duplicates(store=S)` the images of
a code store; either way `apps.keep` picks the file each group keeps, and the removal list and
the HTML page are written when asked for. What it returns prints itself (the table) and becomes
the `tbh.duplicates/1` document, so the CLI only maps options and renders. Files left out of
the groups (gone, outside the folder, changed, unreadable) are logged as warnings.
`find_duplicates` and `find_duplicates_to_remove` give the same answers in imagededup's shapes.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console, ConsoleOptions

from tbhcli.apps.duplicates import variant_distances
from tbhcli.apps.keep import Decision, check_keep, decide, decisions_json, write_to_remove
from tbhcli.apps.photos import FolderDuplicates, folder_duplicates, saved_store_duplicates
from tbhcli.errors import TbhError, option
from tbhcli.terminal import ProgressCallback, shown

log = logging.getLogger(__name__)


@dataclass
class DuplicatesReport:
    """The groups found, the file each keeps, and the files written (`to_remove`, `page`)."""

    found: FolderDuplicates
    decisions: list[Decision]
    to_remove: Path | None = None  # the removal list, when one was written
    listed: int = 0  # files in it
    page: Path | None = None  # the HTML page of the groups, when one was written

    @property
    def groups(self):
        return self.found.groups

    def left_out(self) -> list[tuple[str, list[str]]]:
        """(why, paths) for each kind of file left out of the groups, in the order they matter."""
        found = self.found
        reasons: dict[str, list[str]] = {}
        for path, reason in found.skipped:
            reasons.setdefault(reason, []).append(path)
        kinds = [(f"skipped {len(p)} file(s) ({why})", p) for why, p in reasons.items()]
        kinds += [
            (f"{len(found.missing)} stored file(s) no longer exist, left out", found.missing),
            (f"{len(found.outside)} stored path(s) lead outside the folder, left out",
             found.outside),
            (f"{len(found.changed)} file(s) changed since their code was stored, left out "
             "(delete the .tbh cache to hash them again)", found.changed),
        ]  # fmt: skip
        return [(why, paths) for why, paths in kinds if paths]

    def summary_line(self) -> str:
        """One line for when the groups went to a page: how many, and how many files listed."""
        files = sum(len(g.paths) for g in self.groups)
        line = f"{len(self.groups)} groups of near duplicates ({files} files)"
        if self.page is not None:
            line += f", shown in {shown(self.page)}"
        return line

    def to_json(self) -> str:
        """The `tbh.duplicates/1` document (docs/usage.md)."""
        return decisions_json(self.decisions, self.found)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator:
        from tbhcli.apps.duplicates import groups_table

        yield groups_table(self.groups, [d.kept for d in self.decisions])


def duplicates(
    folder: Path | str | None = None,
    *,
    store: Path | str | None = None,
    radius: int | None = None,
    backbone: str | None = None,
    backbone_weights: Path | None = None,
    bits: int | None = None,
    preprocess: dict | None = None,
    keep: str = "original",
    to_remove: Path | str | None = None,
    null: bool = False,
    html: Path | str | None = None,
    mirror: bool = False,
    workers: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> DuplicatesReport:
    """Near-duplicate groups of the photos under `folder`, or of the images in `store`.

    Never deletes or moves a file: `to_remove` writes the list of every group member but the
    kept one (NUL-terminated with `null`), `html` a page of the groups. `progress(label, done,
    total)` follows the embedding of a CNN `backbone` (the photo code needs none). For example
    `tbhcli.duplicates("photos", to_remove="remove.txt").listed` is how many files were listed.
    """
    check_keep(keep)
    if folder is not None:
        found = folder_duplicates(
            Path(folder), store, radius, backbone, backbone_weights, bits, workers, threads,
            device, preprocess, mirror, progress,
        )  # fmt: skip
    else:
        if mirror:
            raise TbhError(
                f"{option('mirror')} needs a photo folder: a store holds one code per image."
            )
        found = saved_store_duplicates(store, radius, threads)
    report = DuplicatesReport(found, decide(found.groups, found.root, keep))
    for why, paths in report.left_out():
        names = ", ".join(shown(p) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
        log.warning("%s: %s", why, names)
    if to_remove is not None:
        report.to_remove = Path(to_remove)
        report.listed = write_to_remove(report.decisions, report.to_remove, null)
        log.info(
            "%d files to remove listed in %s (nothing was deleted)",
            report.listed, shown(report.to_remove),
        )  # fmt: skip
    if html is not None:
        from tbhcli.apps.duplicates_page import write_page

        report.page = write_page(report.decisions, Path(html))
        log.info("groups page written to %s", shown(report.page))
    return report


def find_duplicates(
    folder: Path,
    radius: int | None = None,
    *,
    store: Path | None = None,
    backbone: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    mirror: bool = False,
) -> dict[str, list[tuple[str, int]]]:
    """Every image under `folder` -> the other members of its `tbh duplicates` group with their
    Hamming distance to it (imagededup's `find_duplicates` shape; paths relative to `folder`,
    [] for an image in no group). The groups are those the CLI prints."""
    found = folder_duplicates(
        folder, store, radius, backbone, workers=workers, threads=threads, device=device,
        mirror=mirror,
    )  # fmt: skip
    out: dict[str, list[tuple[str, int]]] = {name: [] for name in found.paths}
    for group in found.groups:
        i, j = (a.ravel() for a in np.meshgrid(group.rows, group.rows, indexing="ij"))
        distances = variant_distances(found.codes, i, j, found.variants, found.radius)
        distances = distances.reshape(len(group.rows), len(group.rows))  # (G, G)
        for a, name in enumerate(group.paths):
            out[name] = [(group.paths[b], int(distances[a, b]))
                         for b in range(len(group.paths)) if b != a]  # fmt: skip
    return out


def find_duplicates_to_remove(
    folder: Path,
    keep: str = "original",
    radius: int | None = None,
    *,
    store: Path | None = None,
    backbone: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    mirror: bool = False,
) -> list[str]:
    """The files `tbh duplicates FOLDER --to-remove` lists (every group member but the kept
    one, never a picture's only copy: `apps.keep`), as paths under `folder`."""
    report = duplicates(
        folder, store=store, radius=radius, backbone=backbone, keep=keep, mirror=mirror,
        workers=workers, threads=threads, device=device,
    )  # fmt: skip
    return [str(m.file) for d in report.decisions for m in d.to_remove]
