"""`tbh query`: images -> codes with the store's own model -> exact Hamming neighbours in the store.

Query images (files, or folders expanded to their images) are decoded and encoded in batches with
the ONNX model the store was built with, then searched by XOR + popcount (`tbhcli.search`): exact,
ties broken by database row. Results print as a table, as JSON, or as an HTML gallery (gallery.py).
"""

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from tbhcli.deploy.features_model import image_session
from tbhcli.deploy.runtime import ModelInfo, describe_provider, model_info, run_codes
from tbhcli.errors import TbhError, option
from tbhcli.imaging.encode import encode_files
from tbhcli.imaging.images import default_workers, label_of, list_images
from tbhcli.storage.store import CodeStore, open_store
from tbhcli.terminal import shown
from tbhcli.workspace import (
    MODELS_DIR,
    announce_default,
    as_paths,
    resolve_model,
    resolve_store,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuerySetup:
    """What all results of one `query` call share (the gallery's header)."""

    store: Path
    rows: int  # images in the store
    model: Path
    method: str
    bits: int
    seconds: float  # decoding, encoding and searching all the queries


@dataclass
class QueryResult:
    """The neighbours of one query image, nearest first (distance, then database row)."""

    query: Path | str  # the query image, or what named a query given as codes or a store row
    distances: np.ndarray  # int32 [k] Hamming distances
    ids: np.ndarray  # int64 [k] store rows
    paths: list[str]  # relative to `root`
    labels: list[str | None]
    root: Path  # the indexed folder (the store's `root` attribute)
    label: str | None = None  # the query's own class, when it lies in a class folder
    setup: QuerySetup | None = None

    def rows(self) -> list[dict]:
        """One dict per neighbour: rank, distance, row (in the store), path, label."""
        return [
            {"rank": r + 1, "distance": int(d), "row": int(i), "path": p, "label": lab}
            for r, (d, i, p, lab) in enumerate(
                zip(self.distances, self.ids, self.paths, self.labels, strict=True)
            )
        ]


class QueryResults(list[QueryResult]):
    """What `query` returns: one `QueryResult` per query image, in order; prints itself as one
    table per query and becomes the `tbh.query/1` document (`to_json`)."""

    def __rich_console__(self, console: Console, options) -> Iterator:
        from rich.table import Table

        for result in self:
            table = Table(title=shown(result.query), title_justify="left")
            table.add_column("rank", justify="right")
            table.add_column("distance", justify="right")
            table.add_column("path", overflow="fold")
            table.add_column("label")
            for row in result.rows():
                path = openable(result.root, row["path"])
                cells = (row["rank"], row["distance"], path, row["label"] or "")
                table.add_row(*map(shown, cells))
            yield table

    def to_json(self) -> str:
        """The `tbh.query/1` document: store, model, and per query its neighbours."""
        return results_json(self)


def expand_images(items: list[Path]) -> list[Path]:
    """Files as given; folders replaced by their images (recursive, sorted)."""
    files = []
    for item in map(Path, items):
        if item.is_dir():
            files += [item / p for p in list_images(item)]
        elif item.is_file():
            files.append(item)
        else:
            raise TbhError(f"query image not found: {item}")
    if not files:
        raise TbhError(f"no images found in {', '.join(map(str, items))}.")
    return files


def query_label(path: Path, folders: list[Path]) -> str | None:
    """The class of a query image, as indexing names classes: its first folder below one of
    `folders` (the folder arguments, the store's indexed folders) that holds it, else None."""
    resolved = path.resolve()
    for folder in folders:
        if resolved.is_relative_to(base := folder.resolve()):
            label = label_of(resolved.relative_to(base))
            if label is not None:
                return label
    return None


def store_model(store: CodeStore, model: Path | None) -> Path:
    """`model`, or the file the store was built with: onnx/<name> here or in the store's folder,
    or <name> beside the store (`tbh duplicates` keeps NAME.onnx next to NAME.zarr)."""
    if model is not None:
        return resolve_model(model)  # "not found", not "the store was built with another"
    name = store.attrs["model"]
    candidates = [
        MODELS_DIR / name,
        store.path.parent / MODELS_DIR / name,
        store.path.parent / name,
    ]
    for path in candidates:
        if path.is_file():
            announce_default("model", path, "the store's own")
            return path
    raise TbhError(
        f"store {store.path} was built with {store.attrs['model']}, which is not at "
        f"{' or '.join(map(str, dict.fromkeys(candidates)))}; pass it with --model."
    )


def encode_images(
    files: list[Path],
    model: Path,
    device: str = "auto",
    batch_size: int = 256,
    workers: int = 0,
    info: ModelInfo | None = None,
    backbone_weights: Path | None = None,
) -> tuple[np.ndarray, list[Path]]:
    """Codes uint8 [n, bits/8] of the decodable `files`, and those files (others are reported).

    `info` is the model's metadata when the caller already read it (reading hashes the file).
    A features model runs its recorded backbone first (`backbone_weights` replaces its file).
    """
    info = info or model_info(model)
    session, provider = image_session(info, device, backbone_weights)
    log.info(f"model {shown(model)} on [bold]{describe_provider(provider)}[/]")
    codes, kept = [], []
    batches = encode_files(
        files, lambda pixels: run_codes(session, pixels), info.image_size, batch_size, workers
    )
    for batch in batches:
        for i, why in batch.errors:
            log.warning("skipped %s: %s", shown(files[i]), shown(why))
        if batch.ok:
            codes.append(batch.outputs)
            kept += [files[i] for i in batch.ok]
    if not kept:
        raise TbhError("none of the query images could be decoded.")
    return np.concatenate(codes), kept


def check_search(top: int, radius: int | None) -> None:
    """Refuse a `top` below 1 and a negative `radius` (user errors)."""
    if top <= 0:
        raise TbhError(f"{option('top')} must be positive (got {top}).")
    if radius is not None and radius < 0:
        raise TbhError(f"{option('radius')} must be >= 0 (got {radius}).")


def open_searchable(
    store: Path | None = None, model: Path | None = None
) -> tuple[CodeStore, ModelInfo]:
    """The store (non-empty) and its model's metadata, checked to be the model it was built with.

    `model` defaults to the store's own (verified by sha256, so query and database codes match).
    """
    db = open_store(resolve_store(store))
    if not len(db):
        raise TbhError(f"store {db.path} is empty; index images with `tbh index IMAGES_DIR`.")
    model_path = store_model(db, model)
    info = model_info(model_path)
    if info.sha256 != db.attrs["model_sha256"]:
        raise TbhError(
            f"{model_path} is not the model store {db.path} was built with "
            f"({db.attrs['model']}); pass that file with --model."
        )
    return db, info


def search_codes(
    database,
    codes: np.ndarray,
    top: int,
    radius: int | None = None,
    dask: str | None = None,
    threads: int | None = None,
    method: str = "auto",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(distances int32 [k], rows int64 [k]) for each query code uint8 [Q, bits/8], nearest first:
    the `top` nearest, or at most `top` within Hamming `radius` when one is given.

    `database` is anything `tbhcli.search.topk` takes (a `CodeStore`, an array of codes);
    `method` is its top-k method ("auto", "scan" or "mih").
    """
    from tbhcli.search import radius_search, topk

    if radius is None:
        k = min(top, len(database))
        dists, ids = topk(database, codes, k, threads=threads, dask=dask, method=method)
        found = zip(dists, ids, strict=True)
    else:
        hits = radius_search(database, codes, radius, threads, dask)
        found = ((d[:top], i[:top]) for d, i in hits)
    return [(np.asarray(d, np.int32), np.asarray(i, np.int64)) for d, i in found]


def query(
    images: str | os.PathLike | Iterable[str | os.PathLike],
    top: int = 10,
    store: Path | None = None,
    model: Path | None = None,
    radius: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    dask: str | None = None,
    method: str = "auto",
    backbone_weights: Path | None = None,
) -> QueryResults:
    """The `top` nearest store items of each query image (within Hamming `radius` if given).

    `images`: an image file or a folder, or a list of them (folders expand to their images).

    `model` defaults to the store's own (verified by sha256, so query and database codes match).
    `dask` ("local" or a scheduler address) searches the store's blocks on a Dask cluster;
    `method` picks the top-k method (`tbhcli.search.topk`). A store indexed with a features
    model is queried through that model's recorded backbone (`backbone_weights` replaces its
    weights file).
    """
    check_search(top, radius)
    began = time.perf_counter()
    images = as_paths(images)
    files = expand_images(images)  # a mistyped query is reported before any default is picked
    db, info = open_searchable(store, model)
    workers = default_workers() if len(files) > batch_size else 0  # a pool pays off for folders
    codes, kept = encode_images(
        files, info.path, device, batch_size, workers, info, backbone_weights
    )
    found = search_codes(db, codes, top, radius, dask, method=method)
    seconds = time.perf_counter() - began
    setup = QuerySetup(db.path, len(db), info.path, info.method, info.bits, seconds)
    folders = [Path(p) for p in images if Path(p).is_dir()] + [db.root]
    if db.queries is not None:
        folders.append(db.queries.root)
    results = QueryResults()
    for q, (d, i) in zip(kept, found, strict=True):
        paths, labels = db.lookup(i)
        label = query_label(q, folders)
        results.append(QueryResult(q, d, i, paths, labels, db.root, label, setup))
    return results


def openable(root: Path, stored: str) -> str:
    """A stored path (relative to the indexed folder) as the user opens it from the current
    folder: relative when it lies below it (`images/0/335.png`), else absolute."""
    path = Path(os.path.abspath(Path(root) / stored))
    here = Path(os.path.abspath(Path.cwd()))
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)


def results_payload(results: list[QueryResult]) -> list[dict]:
    """A list of {query, neighbours: [{rank, distance, row, path, label}]}: the results as JSON
    data (`tbh serve`'s /query answer, and `results` in the `tbh.query/1` document)."""
    return [{"query": str(r.query), "neighbours": r.rows()} for r in results]


def results_json(results: list[QueryResult]) -> str:
    """The `tbh.query/1` document: store, model, and per query its neighbours (docs/usage.md)."""
    from tbhcli.jsondoc import document

    setup = results[0].setup if results else None
    return document(
        "query",
        {
            "store": setup and setup.store,
            "model": setup and setup.model,
            "results": results_payload(results),
        },
    )


def query_text(
    texts: list[str],
    top: int = 10,
    store: Path | None = None,
    model: Path | None = None,
    radius: int | None = None,
    device: str = "auto",
    dask: str | None = None,
    method: str = "auto",
) -> QueryResults:
    """The `top` nearest store items of each text (within Hamming `radius` if given): the text is
    hashed by the text model beside the store's model (a `clip:NAME` run; deploy/text_model.py)
    into the store's binary codes, then searched like an image's codes."""
    from tbhcli.deploy.text_runtime import open_text_model
    from tbhcli.imaging.text import check_texts

    check_search(top, radius)
    texts = check_texts(list(texts))
    began = time.perf_counter()
    db, info = open_searchable(store, model)
    codes = open_text_model(info, device).codes(texts)
    found = search_codes(db, codes, top, radius, dask, method=method)
    setup = QuerySetup(
        db.path, len(db), info.path, info.method, info.bits, time.perf_counter() - began
    )
    results = QueryResults()
    for text, (d, i) in zip(texts, found, strict=True):
        paths, labels = db.lookup(i)
        results.append(QueryResult(text, d, i, paths, labels, db.root, None, setup))
    return results
