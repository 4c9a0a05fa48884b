"""`tbh index`: an image folder -> packed codes appended to the code store (codes.zarr).

Worker processes decode and resize images (`images.load_image`) a batch ahead while the main
thread runs the ONNX model (onnxruntime) on the previous batch and appends its codes to the store.
Each appended batch is committed atomically (store.py), so a killed run resumes where it stopped:
images whose paths are already committed are skipped. Undecodable files are skipped and listed.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text

from tbhcli.atomic import write_text_atomic
from tbhcli.deploy.features_model import check_runs_on_images, image_session
from tbhcli.deploy.runtime import ModelInfo, describe_provider, model_info, run_codes
from tbhcli.errors import TbhError, option
from tbhcli.imaging.encode import encode_files
from tbhcli.imaging.images import (
    check_workers,
    list_images,
    read_file_list,
)
from tbhcli.indexing.tables import TableReport, commit_encoded, pending_images
from tbhcli.storage.mih_tables import update_tables
from tbhcli.storage.prune import RemoveReport, remove
from tbhcli.storage.render import removed_lines
from tbhcli.storage.store import QUERIES
from tbhcli.storage.writer import StoreLock, StoreWriter, open_writer
from tbhcli.terminal import ProgressCallback, no_progress, printable, shown
from tbhcli.workspace import newest_finished_run, resolve_model, resolve_store

log = logging.getLogger(__name__)
TASK_SIZE = 2048  # files per Dask task: scheduling costs nothing next to it, tasks still balance


@dataclass
class IndexReport:
    store: Path
    model: Path
    provider: str
    rows: int  # rows_committed of the database table afterwards
    seconds: float
    tables: list[TableReport]
    removed: RemoveReport | None = None  # with `prune`: the rows whose files were gone
    multi_index: tuple[int, int] | None = None  # (rows, segments) of the mih tables, if any
    errors_file: Path | None = None  # where the skipped files were listed, if asked

    def __rich_console__(self, console, options) -> Iterator[Text]:
        """Per folder what was added, kept and skipped; the store's size and speed; what
        pruning removed; the multi-index tables."""
        for table in self.tables:
            yield Text.from_markup(
                f"{shown(table.folder)}: {table.added} added, {table.already} already indexed, "
                f"{len(table.errors)} skipped (unreadable)"
            )
            for path, why in table.errors[:5]:
                yield Text.from_markup(f"  [yellow]skipped[/] {shown(path)}: {shown(why)}")
        if any(len(t.errors) > 5 for t in self.tables) and self.errors_file is None:
            errors = option("errors", "--errors FILE", "errors=FILE")
            yield Text(f"  ... pass {errors} for the full list")
        yield Text.from_markup(
            f"store {shown(self.store)}: {self.rows} images; {self.added} added in "
            f"{self.seconds:.1f} s ({self.images_per_s:.0f} images/s)"
        )
        if self.removed is not None:
            yield from removed_lines(self.removed)
        if self.multi_index is not None:
            rows, segments = self.multi_index
            yield Text(f"multi-index tables: {rows} rows in {segments} segment(s)")

    @property
    def added(self) -> int:
        return sum(t.added for t in self.tables)

    @property
    def images_per_s(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0

    def to_json(self) -> str:
        """The `tbh.index/1` document (docs/usage.md)."""
        from tbhcli.jsondoc import document

        def table(t: TableReport) -> dict:
            skipped = [{"path": p, "reason": why} for p, why in t.errors]
            return {"folder": t.folder, "found": t.found, "already": t.already, "added": t.added,
                    "skipped": skipped}  # fmt: skip

        return document(
            "index",
            {
                "store": self.store,
                "model": self.model,
                "provider": self.provider,
                "rows": self.rows,
                "added": self.added,
                "seconds": round(self.seconds, 3),
                "images_per_s": round(self.images_per_s, 1),
                "images": table(self.tables[0]),
                "query_images": table(self.tables[1]) if len(self.tables) > 1 else None,
            },
        )


def index_folder(
    folder: Path,
    writer: StoreWriter,
    relpaths: list[Path],
    session,
    info: ModelInfo,
    batch_size: int,
    workers: int,
    progress: ProgressCallback = no_progress,
) -> TableReport:
    """Append every image of `relpaths` (relative to `folder`) that the table does not hold yet."""
    report = TableReport(folder)
    todo, labels = pending_images(writer, relpaths, report)
    files = [folder / p for p in todo]
    batches = encode_files(  # codes (B, bits / 8) per batch
        files, lambda pixels: run_codes(session, pixels), info.image_size, batch_size, workers
    )
    label = f"indexing {folder}"
    progress(label, 0, len(todo))
    for batch in batches:
        commit_encoded(writer, report, todo, labels, batch)
        progress(label, batch.end, len(todo))
    return report


def image_model(model: Path | None) -> Path:
    """`model`, or the newest images model, with a note when a newer run was not exported yet."""
    if model is not None:
        return resolve_model(model)
    newest = resolve_model(None)
    run = newest_finished_run()
    if run is not None and run[1] > newest.stat().st_mtime:
        log.info(
            f"[yellow]note:[/] run {shown(run[0])} is newer than {shown(newest)}; "
            "`tbh export` it to index with it."
        )
    return newest


def write_skipped_list(path: Path, tables: list[TableReport]) -> None:
    """One line per skipped file: `<folder>/<relative path>\t<reason>`.

    Names are written `printable` (a tab or newline in a name would otherwise break the format).
    """
    lines = [
        f"{printable(t.folder / p)}\t{printable(why)}\n" for t in tables for p, why in t.errors
    ]
    write_text_atomic(path, "".join(lines))  # (its folder is made: found missing after the work)


def index(
    images: Path,
    store: Path | None = None,
    model: Path | None = None,
    query_images: Path | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    errors: Path | None = None,
    device: str = "auto",
    repoint: bool = False,
    prune: bool = False,
    multi_index: bool = False,
    dask: str | None = None,
    files: Path | None = None,
    task_size: int = TASK_SIZE,
    jpeg_decoder: str = "auto",
    backbone_weights: Path | None = None,
    progress: ProgressCallback | None = None,
) -> IndexReport:
    """Index the images under `images` (recursively) into `store` (default ./codes.zarr).

    `model` defaults to the newest onnx/*.onnx; `query_images` is a folder recorded as the store's
    query set (for `tbh evaluate`); `errors` receives the list of skipped files. `repoint`: the
    indexed folder was moved; the store's root becomes `images` (and `query_images`). `prune`:
    then drop the rows whose files are gone (`tbhcli.storage.prune.remove`). `multi_index`
    builds the store's multi-index tables (storage/mih_tables.py); a store that has them gets
    them extended to the new rows either way. `files` names the images to index instead of
    listing the folder (one path a line). `dask` ("local" or a scheduler address) decodes and
    encodes on a Dask cluster in tasks of `task_size` files; `workers` is then the size of the
    local cluster (indexing/cluster.py).
    `jpeg_decoder` "auto" decodes JPEGs with nvJPEG on Dask workers whose model runs on CUDA,
    "pillow" always with Pillow. A features model (`tbh export --input features`) runs the
    backbone its metadata records first; `backbone_weights` replaces its recorded weights file.
    `progress(label, done, total)` is called as each folder's images are committed
    (`tbhcli.terminal.ProgressCallback`; `tbh` draws bars).
    """
    images = Path(images)
    progress = progress or no_progress
    if batch_size <= 0:
        raise TbhError(f"--batch-size must be positive (got {batch_size}).")
    model_path = image_model(model)
    info = check_runs_on_images(model_info(model_path))
    if dask is not None and info.input == "features":
        raise TbhError(
            f"{model_path} takes features; --dask indexes with images models only (export one "
            "with `tbh export`)."
        )
    store_path = resolve_store(store, must_exist=False)
    if dask is None:
        workers = check_workers(workers)
        if jpeg_decoder == "nvjpeg":
            raise TbhError("--jpeg-decoder nvjpeg runs on Dask GPU workers; add --dask.")
    # Listed before any work starts: a missing folder or a bad file list is a user error.
    listings = [(images, None, list_images(images) if files is None else None)]
    if files is not None:
        if not images.is_dir():
            raise TbhError(f"image folder not found: {images}; pass a directory of images.")
        listings = [(images, None, read_file_list(files, images))]
    if query_images:
        listings.append((Path(query_images), QUERIES, list_images(query_images)))
    with ExitStack() as stack:
        if dask is None:
            session, provider = image_session(info, device, backbone_weights)
            log.info(f"model {shown(model_path)} on [bold]{describe_provider(provider)}[/]")

            def index_table(folder, writer, relpaths):
                return index_folder(
                    folder, writer, relpaths, session, info, batch_size, workers, progress
                )
        else:
            from tbhcli.indexing.cluster import cluster_indexer

            cluster = stack.enter_context(
                cluster_indexer(dask, workers, info, device, batch_size, task_size, jpeg_decoder)
            )

            def index_table(folder, writer, relpaths):
                return cluster.index_folder(folder, writer, relpaths, progress)

        began = time.perf_counter()
        tables = []
        with StoreLock(store_path):
            for folder, table, relpaths in listings:
                writer = open_writer(
                    store_path,
                    bits=info.bits,
                    model_sha256=info.sha256,
                    model=model_path.name,
                    backbone=info.backbone or "",
                    image_size=info.image_size,
                    root=folder,
                    table=table,
                    repoint=repoint,
                )
                tables.append(index_table(folder, writer, relpaths))
                if table is None:
                    rows = len(writer)
            mih = update_tables(store_path, build=multi_index)
        seconds = time.perf_counter() - began
        if dask is not None:
            provider = cluster.provider
    if errors is not None:
        write_skipped_list(errors, tables)
    pruned_at = time.perf_counter()
    removed = remove(store_path) if prune else None
    rows = removed.rows["store"] if removed else rows
    seconds += time.perf_counter() - pruned_at
    return IndexReport(
        store_path, model_path, provider, rows, seconds, tables, removed, mih, errors
    )
