"""`tbh duplicates PHOTOS_DIR --backbone CNN`: codes of what a photo shows, fitted on the folder.

The first run embeds every image with the backbone (on `--device`), stops on NaN features,
fits ITQ on the folder's features (LSH when the folder has fewer images than `2 * bits`, too few
to fit a rotation), saves that run and exports it to ONNX (images -> codes), and writes the
codes into a store. Later runs index only the files the store does not hold yet, through that
same model (`tbh index`), so codes stay comparable and old files are never embedded again.
Everything lives in `FOLDER/.tbh/` (`duplicates.zarr`, `.onnx`, `-run/`), or beside `--store`.
A file's fingerprint is recorded when its code is stored (`-fingerprints.json`); a file changed
since (replaced in place, edited) has a stale code, so it leaves the groups, named
(`changed_since_stored`).
"""

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.atomic import write_text_atomic
from tbhcli.errors import TbhError
from tbhcli.imaging.images import check_workers, list_images
from tbhcli.terminal import ProgressCallback

STORE_RADIUS = 2  # for CNN codes (ITQ/LSH), in a store or a CNN's first run
CNN_BITS = 256  # code length of a CNN's first run
CACHE_DIR = ".tbh"
STORE_NAME = "duplicates.zarr"


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Within the block, `logger` passes on warnings only (its INFO lines are internal here)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass
class CachePaths:
    """Where a folder's duplicate search keeps its store, model and binariser."""

    store: Path
    model: Path
    run: Path
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage run

    @property
    def fingerprints(self) -> Path:
        return self.store.parent / f"{self.store.name.removesuffix('.zarr')}-fingerprints.json"

    @classmethod
    def for_folder(cls, folder: Path, store: Path | None) -> "CachePaths":
        store = Path(store) if store is not None else Path(folder) / CACHE_DIR / STORE_NAME
        stem = store.name.removesuffix(".zarr")
        return cls(store, store.parent / f"{stem}.onnx", store.parent / f"{stem}-run")


def fit_binariser(features: np.ndarray, bits: int, backbone: str, seed: int = 0):
    """(method, LinearHash) fitted on the folder's CNN features [N, D], needing no labels."""
    from tbhcli.hashing.baselines import fit_baseline

    method = "itq" if len(features) >= 2 * bits else "lsh"
    return method, fit_baseline(method, features, bits, seed)


def check_finite(features: np.ndarray, backbone: str) -> None:
    """NaN or infinite features would all get one code (issue 20): stop, naming the model."""
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise TbhError(
            f"backbone {backbone} gave NaN or infinite features for {int(bad.sum())} of "
            f"{len(features)} images; check the model (or its --mean/--std) and run again."
        )


def _first_run(
    folder, paths: CachePaths, backbone, weights, bits, workers, device, preprocess, progress
) -> None:
    """Embed all of `folder`, fit the binariser, save + export it, write the codes to the store."""
    import torch

    from tbhcli.deploy.export import export
    from tbhcli.deploy.runtime import model_info
    from tbhcli.hashing.runs import load_run, save_run
    from tbhcli.imaging.backbones import load_backbone, recipe
    from tbhcli.imaging.embed import decoded_paths, embed_images
    from tbhcli.imaging.external import image_by_image
    from tbhcli.storage.writer import StoreLock, open_writer

    relpaths = list_images(folder)
    if len(relpaths) < 2:
        raise TbhError(f"{folder} holds {len(relpaths)} image(s); duplicates need at least two.")
    model = load_backbone(backbone, weights, **preprocess)
    began = time.perf_counter()
    feats, ok = embed_images(
        folder, relpaths, model, model.image_size, workers=workers, device=device,
        progress=progress,
    )  # fmt: skip
    paths.seconds["embed"] = time.perf_counter() - began
    check_finite(feats[ok], str(backbone))
    kept = [p.as_posix() for p in decoded_paths(folder, relpaths, ok)]
    began = time.perf_counter()
    method, encoder = fit_binariser(feats[ok], bits, model.name)
    paths.seconds["fit"] = time.perf_counter() - began
    config = {
        "method": method,
        "bits": bits,
        "radius": STORE_RADIUS,
        "feature_dim": model.feature_dim,
        **recipe(model, weights),  # backbone, its weights, mean, std, image size
        "fitted_on": str(Path(folder).resolve()),
        "images": int(ok.sum()),
    }
    began = time.perf_counter()
    save_run(paths.run, config, encoder)
    with _quiet("tbhcli.deploy.export"):  # the folder's own model: no ONNX diagnostics for it
        export(paths.run, paths.model, "features" if image_by_image(model) else "images", weights)
    info = model_info(paths.model)
    paths.seconds["export"] = time.perf_counter() - began
    began = time.perf_counter()
    with torch.no_grad():
        codes = load_run(paths.run).encode(feats[ok])  # (N, bits / 8)
    with StoreLock(paths.store):
        writer = open_writer(
            paths.store,
            bits=bits,
            model_sha256=info.sha256,
            model=paths.model.name,
            backbone=model.name,
            image_size=model.image_size,
            root=folder,
        )
        writer.append(codes, kept, np.full(len(kept), -1, np.int32))
    paths.seconds["store"] = time.perf_counter() - began


def _check_same_fit(paths: CachePaths, asked: dict) -> None:
    """A later run reuses the first run's model: asking for another one is an error, not ignored.

    `asked` holds the options given (None: not given): backbone, bits, image_size, mean, std.
    """
    from tbhcli.hashing.runs import load_config

    config = load_config(paths.run)
    recorded = {"backbone": config["backbone"], "bits": config["bits"],
                "image_size": config.get("image_size"), "mean": config.get("backbone_mean"),
                "std": config.get("backbone_std")}  # fmt: skip
    for key, value in asked.items():
        fitted = recorded[key]
        if value is None:
            continue
        if key == "backbone":
            same = str(value) == str(fitted)
        else:
            same = fitted is not None and np.allclose(value, fitted)
        if not same:
            raise TbhError(
                f"{paths.store} was fitted with --{key.replace('_', '-')} {fitted}; to use "
                f"{value}, delete {paths.store.parent} (or pass another --store) and run again."
            )


def fitted_radius(paths: CachePaths) -> int:
    """The default threshold of the binariser fitted in `paths.run` (`STORE_RADIUS`)."""
    from tbhcli.hashing.runs import load_config

    config = load_config(paths.run)
    return int(config.get("radius", STORE_RADIUS))


def update_store(
    folder: Path,
    store: Path | None = None,
    backbone: str | None = None,
    weights: Path | None = None,
    bits: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    preprocess: dict | None = None,
    progress: ProgressCallback | None = None,
) -> CachePaths:
    """Bring the folder's duplicate store up to date (only new files are embedded); its paths.

    `backbone` (a CNN) and `bits` choose the first run's model (default `CNN_BITS`); later runs
    keep it. `preprocess` ({image_size, mean, std}, see `load_backbone`) sets the backbone's
    input side and normalisation on the first run (an ONNX backbone may need them); the run
    records them, so later runs keep them too.
    """
    folder = Path(folder)
    list_images(folder)  # a missing folder is a user error before any work
    workers = check_workers(workers)
    if bits is not None and (bits <= 0 or bits % 8):
        raise TbhError(f"--bits must be a positive multiple of 8 (got {bits}).")
    paths = CachePaths.for_folder(folder, store)
    if paths.model.is_file() and (paths.store / "zarr.json").is_file():
        from tbhcli.indexing.index import index

        _check_same_fit(paths, {"backbone": backbone, "bits": bits, **(preprocess or {})})
        began = time.perf_counter()
        index(folder, paths.store, paths.model, workers=workers, device=device, progress=progress)
        paths.seconds["index"] = time.perf_counter() - began
    else:
        paths.store.parent.mkdir(parents=True, exist_ok=True)
        bits = bits or CNN_BITS
        _first_run(
            folder, paths, backbone, weights, bits, workers, device, preprocess or {}, progress
        )
    return paths


def changed_since_stored(paths: CachePaths) -> list[str]:
    """Store rows whose file changed since its code was stored, by fingerprint (size, mtime ns,
    inode, device). Rows seen for the first time have their fingerprint recorded now (just
    indexed); rows whose file is gone are left to `usable_rows`."""
    from tbhcli.imaging.scan import fingerprint
    from tbhcli.storage.names import decode_name
    from tbhcli.storage.store import open_store

    table = open_store(paths.store)
    known = {}
    if paths.fingerprints.is_file():
        try:
            known = json.loads(paths.fingerprints.read_text())
        except (OSError, ValueError):
            known = {}  # unreadable: every row counts as just indexed
    changed, updated = [], False
    for name in (decode_name(str(p)) for p in table.paths):
        try:
            now = list(fingerprint(table.root / name))
        except OSError:
            continue
        if name not in known:
            known[name], updated = now, True
        elif known[name] != now:
            changed.append(name)
    if updated:
        write_text_atomic(paths.fingerprints, json.dumps(known))
    return changed
