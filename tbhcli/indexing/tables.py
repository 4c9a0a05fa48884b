"""One table of a store filled from a list of images: what it lacks, how encoded files land in it.

Shared by `tbh index` on this machine (index.py) and on a Dask cluster (cluster.py), so both
skip the same committed paths, label the same way and commit in the same order.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.imaging.images import label_of
from tbhcli.storage.names import encode_name
from tbhcli.storage.writer import StoreWriter


@dataclass
class TableReport:
    """What indexing one folder into one table did."""

    folder: Path
    found: int = 0
    already: int = 0  # committed by an earlier run, skipped
    added: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def pending_images(
    writer: StoreWriter, relpaths: list[Path], report: TableReport
) -> tuple[list[Path], np.ndarray]:
    """The images of `relpaths` the table does not hold yet, in order, and their int32 labels.

    Registers unseen classes up front, so labels do not depend on which batch lands first.
    """
    report.found = len(relpaths)
    done = writer.committed_paths()
    todo = [p for p in relpaths if encode_name(p.as_posix()) not in done]
    report.already = len(relpaths) - len(todo)
    return todo, writer.label_ids([label_of(p) for p in todo])


def commit_encoded(
    writer: StoreWriter,
    report: TableReport,
    todo: list[Path],
    labels: np.ndarray,
    start: int,
    codes: np.ndarray | None,
    ok: list[int],
    errors: list[tuple[int, str]],
) -> int:
    """Append and commit the codes [len(ok), bits / 8] of files `todo[start + i]` for i in `ok`,
    record the files that failed; return the position of the next file."""
    rows = [start + i for i in ok]
    if rows:
        writer.append(codes, [todo[r].as_posix() for r in rows], labels[rows])
    report.added += len(rows)
    report.errors += [(todo[start + i].as_posix(), why) for i, why in errors]
    return start + len(ok) + len(errors)
