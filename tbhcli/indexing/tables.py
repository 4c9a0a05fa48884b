"""One table of a store filled from a list of images: what it lacks, how encoded files land in it.

Shared by `tbh index` on this machine (index.py) and on a Dask cluster (cluster.py), so both
skip the same committed paths, label the same way and commit in the same order.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.imaging.encode import EncodedBatch
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
    batch: EncodedBatch,
) -> None:
    """Append and commit the codes [len(ok), bits / 8] of files `todo[i]` for i in `batch.ok`,
    record the files that failed."""
    if batch.ok:
        writer.append(batch.outputs, [todo[i].as_posix() for i in batch.ok], labels[batch.ok])
    report.added += len(batch.ok)
    report.errors += [(todo[i].as_posix(), why) for i, why in batch.errors]
