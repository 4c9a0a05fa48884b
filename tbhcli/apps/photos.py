"""`tbh duplicates FOLDER`: near-duplicate photos in a folder, with no training step to run.

The first run embeds every image with the backbone, fits a label-free binariser on the folder's
own features, saves it as an ordinary run and exports it to ONNX (images -> codes), and writes
the codes into a store. The default is the perceptual `dct` hash on `gray32` thumbnails
(tbhcli.hashing.perceptual): it finds re-encoded, resized and lightly edited copies and keeps
distinct photos apart (docs/duplicates.md). A CNN backbone gets ITQ instead (LSH when the folder
has fewer images than `2 * bits`, too few to fit a rotation): codes of what a photo shows,
not of the photo itself. Later runs index only the files the store does not hold yet, through that
same model (`tbh index`), so codes stay comparable and old files are never embedded again.
Groups then come from `tbhcli.apps.duplicates` at `radius` bits.

Everything lives in a cache folder: `FOLDER/.tbh/` by default (hidden, so never listed as
images), or beside `store` when one is given: `NAME.zarr` (codes), `NAME.onnx` (the model),
`NAME-run/` (the binariser). The user's files are only read.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.apps.duplicates import DuplicateGroup, duplicates
from tbhcli.errors import TbhError
from tbhcli.imaging.images import check_workers, list_images

DEFAULT_BACKBONE = "gray32"
STORE_RADIUS = 2  # for a store of semantic codes made by `tbh index`
CACHE_DIR = ".tbh"
STORE_NAME = "duplicates.zarr"


@dataclass
class CachePaths:
    """Where a folder's duplicate search keeps its store, model and binariser."""

    store: Path
    model: Path
    run: Path
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage run

    @classmethod
    def for_folder(cls, folder: Path, store: Path | None) -> "CachePaths":
        store = Path(store) if store is not None else Path(folder) / CACHE_DIR / STORE_NAME
        stem = store.name.removesuffix(".zarr")
        return cls(store, store.parent / f"{stem}.onnx", store.parent / f"{stem}-run")


def default_bits(backbone: str) -> int:
    """Code length of a first run: 128 DCT bits for `gray32`, 256 ITQ bits for a CNN."""
    return 128 if backbone == DEFAULT_BACKBONE else 256


def default_radius(method: str, bits: int) -> int:
    """The grouping threshold a fitted binariser gets, calibrated on bench/dedup_quality.py.

    dct: a quarter of the bits (32 of 128: no two of the benchmark's distinct originals grouped,
    every JPEG/resized copy found); ITQ/LSH on CNN features: 2 bits (docs/duplicates.md).
    """
    from tbhcli.hashing.perceptual import METHOD

    return bits // 4 if method == METHOD else STORE_RADIUS


def fit_binariser(features: np.ndarray, bits: int, backbone: str, seed: int = 0):
    """(method, LinearHash) fitted on the folder's features [N, D], needing no labels."""
    from tbhcli.hashing.baselines import fit_baseline
    from tbhcli.hashing.perceptual import METHOD, fit_dct_hash

    if backbone == DEFAULT_BACKBONE:
        return METHOD, fit_dct_hash(features, bits)
    method = "itq" if len(features) >= 2 * bits else "lsh"
    return method, fit_baseline(method, features, bits, seed)


def _first_run(
    folder, paths: CachePaths, backbone, weights, bits, workers, device, preprocess
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
    feats, ok = embed_images(folder, relpaths, model, model.image_size, workers=workers)
    paths.seconds["embed"] = time.perf_counter() - began
    kept = [p.as_posix() for p in decoded_paths(folder, relpaths, ok)]
    began = time.perf_counter()
    method, encoder = fit_binariser(feats[ok], bits, model.name)
    paths.seconds["fit"] = time.perf_counter() - began
    config = {
        "method": method,
        "bits": bits,
        "radius": default_radius(method, bits),
        "feature_dim": model.feature_dim,
        **recipe(model, weights),  # backbone, its weights, mean, std, image size
        "fitted_on": str(Path(folder).resolve()),
        "images": int(ok.sum()),
    }
    began = time.perf_counter()
    save_run(paths.run, config, encoder)
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
    """The default threshold of the binariser fitted in `paths.run` (`default_radius`)."""
    from tbhcli.hashing.runs import load_config

    config = load_config(paths.run)
    return int(config.get("radius", default_radius(config["method"], int(config["bits"]))))


def update_store(
    folder: Path,
    store: Path | None = None,
    backbone: str | None = None,
    weights: Path | None = None,
    bits: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    preprocess: dict | None = None,
) -> CachePaths:
    """Bring the folder's duplicate store up to date (only new files are embedded); its paths.

    `backbone` and `bits` choose the first run's model (default `gray32`, `default_bits`); later
    runs keep it. `preprocess` ({image_size, mean, std}, see `load_backbone`) sets the backbone's
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
        index(folder, paths.store, paths.model, workers=workers, device=device)
        paths.seconds["index"] = time.perf_counter() - began
    else:
        paths.store.parent.mkdir(parents=True, exist_ok=True)
        backbone = backbone or DEFAULT_BACKBONE
        bits = bits or default_bits(backbone)
        _first_run(folder, paths, backbone, weights, bits, workers, device, preprocess or {})
    return paths


def folder_duplicates(
    folder: Path,
    store: Path | None = None,
    radius: int | None = None,
    backbone: str | None = None,
    weights: Path | None = None,
    bits: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str = "auto",
) -> list[DuplicateGroup]:
    """Groups of near-duplicate images under `folder` (module doc): index, then group.

    `radius` defaults to the one calibrated for the fitted binariser (`default_radius`).
    """
    paths = update_store(folder, store, backbone, weights, bits, workers, device)
    return duplicates(paths.store, fitted_radius(paths) if radius is None else radius, threads)
