"""`tbh duplicates FOLDER`: near-duplicate photos in a folder, with no training step to run.

The default hashes every photo by itself (`hashing.perceptual`: a 192-bit code of DCT and
gradient signs of the whole picture, each a comparison within the image) and caches the codes
by file fingerprint in `FOLDER/.tbh/photo-codes.npz` (`apps.photo_codes`): a photo's code
never depends on the folder, a replaced file is hashed again, a deleted one leaves. No model is
fitted and torch is not imported. With `--store S` the codes are also written to the code store
S (rebuilt when stale), so `tbh duplicates --store S` and `tbh query` can use them later.

A CNN backbone (`--backbone efficientnet-lite0`, ...) is the other way (`apps.cnn_codes`):
codes of what a photo shows, from a binariser fitted on the folder's features.

Either way, groups are formed among files that exist inside the folder (links resolved), and
the result says what was left out and why. The user's files are only read.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.apps.cnn_codes import (
    CACHE_DIR,
    STORE_RADIUS,
    CachePaths,
    changed_since_stored,
    fitted_radius,
    update_store,
)
from tbhcli.apps.duplicates import (
    DuplicateGroup,
    group_codes,
    store_duplicates,
)
from tbhcli.errors import TbhError
from tbhcli.hashing.perceptual import BITS
from tbhcli.imaging.images import check_workers
from tbhcli.terminal import ProgressCallback

DEFAULT_BACKBONE = "gray32"
DEFAULT_RADIUS = 66  # of 192 bits; calibrated on bench/dedup_quality.py --set tiles


@dataclass
class FolderDuplicates:
    """What `tbh duplicates` found: groups (paths relative to `root`) and what was left out."""

    root: Path
    groups: list[DuplicateGroup]
    radius: int
    images: int  # files grouped among
    store: Path | None = None  # the code store written or read, if any
    links: set[str] = field(default_factory=set)  # grouped paths that are symbolic links
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing: list[str] = field(default_factory=list)  # store rows whose file is gone
    outside: list[str] = field(default_factory=list)  # store rows leading outside the root
    changed: list[str] = field(default_factory=list)  # files changed since their code was stored
    hashed: int = 0  # images decoded in this run
    seconds: dict[str, float] = field(default_factory=dict)
    codes: np.ndarray | None = None  # uint8 [N, B] that group rows index
    paths: list[str] = field(default_factory=list)  # the file name of each row of `codes`
    variants: int = 1  # codes per row: 8 with --mirror (`apps.duplicates.variant_distances`)

    def to_dict(self) -> dict:
        """Counts of what was grouped and left out, for the JSON document."""
        return {
            "root": str(self.root),
            "radius": self.radius,
            "images": self.images,
            "store": None if self.store is None else str(self.store),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "missing": self.missing,
            "outside": self.outside,
            "changed": self.changed,
        }


def check_radius(radius: int, bits: int) -> int:
    if not 0 <= radius <= bits:
        raise TbhError(f"--radius must be 0..{bits} for {bits}-bit codes (got {radius}).")
    return radius


def _photo_duplicates(
    folder: Path, store: Path | None, radius: int | None, workers, threads, mirror: bool
):
    """The default path (module doc): codes of each photo, cached; no model, no torch."""
    from tbhcli.apps.photo_codes import CACHE_NAME, MIRROR_CACHE_NAME, folder_codes

    radius = check_radius(DEFAULT_RADIUS if radius is None else radius, BITS)
    name = MIRROR_CACHE_NAME if mirror else CACHE_NAME
    cache = Path(folder) / CACHE_DIR / name
    if store is not None:
        cache = Path(store).parent / f"{Path(store).name.removesuffix('.zarr')}-{name}"
    found = folder_codes(folder, cache, workers, mirror)
    began = time.perf_counter()
    groups = group_codes(found.codes, found.paths, radius, threads, found.variants)
    found.seconds["group"] = time.perf_counter() - began
    if store is not None:
        from tbhcli.apps.photo_store import write_photo_store

        own = found.codes[:, : BITS // 8]  # the store holds each image's own code
        write_photo_store(Path(store), found.scan.root, found.paths, own)
    links = {p.as_posix() for p in found.scan.links}
    root = found.scan.root.absolute()  # the remove list names files wherever it is read
    return FolderDuplicates(
        root, groups, radius, len(found.paths), store, links, found.scan.skipped,
        hashed=found.hashed, seconds=found.seconds, codes=found.codes, paths=found.paths,
        variants=found.variants,
    )  # fmt: skip


def links_among(root: Path, groups: list[DuplicateGroup]) -> set[str]:
    return {p for g in groups for p in g.paths if (Path(root) / p).is_symlink()}


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
    preprocess: dict | None = None,
    mirror: bool = False,
    progress: ProgressCallback | None = None,
) -> FolderDuplicates:
    """Groups of near-duplicate images under `folder` (module doc).

    `radius` defaults to `DEFAULT_RADIUS` for the photo code, to the fitted one for a CNN.
    `mirror` also groups mirrored and 90-degree-rotated copies (photo code only).
    """
    folder = Path(folder)
    workers = check_workers(workers)
    cnn = backbone not in (None, DEFAULT_BACKBONE)
    if not cnn and store is not None and (Path(store) / "zarr.json").is_file():
        cnn = _is_cnn_store(Path(store))
    if not cnn:
        if bits not in (None, BITS) or weights is not None or any((preprocess or {}).values()):
            raise TbhError(
                "--bits, --backbone-weights, --image-size, --mean and --std choose a CNN's "
                f"codes; the photo code (gray32) is {BITS} bits of 32 x 32 and 9 x 8 thumbnails."
            )
        return _photo_duplicates(folder, store, radius, workers, threads, mirror)
    if mirror:
        raise TbhError("--mirror works with the photo code (the default), not a CNN --backbone.")
    paths = update_store(
        folder, store, backbone, weights, bits, workers, device, preprocess, progress
    )
    radius = fitted_radius(paths) if radius is None else radius
    changed = frozenset(changed_since_stored(paths))
    groups, usable = store_duplicates(paths.store, radius, threads, changed)
    return _from_store(groups, usable, radius, paths.store, paths.seconds)


def _is_cnn_store(store: Path) -> bool:
    """Whether `store` holds a CNN's codes from an earlier `tbh duplicates --backbone` run (an
    older tbh's gray32 run there is rebuilt with photo codes instead: `apps.photo_store`)."""
    import json

    config = CachePaths.for_folder(Path("."), store).run / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("backbone") != DEFAULT_BACKBONE


def saved_store_duplicates(
    store: Path | None, radius: int | None, threads: int | None = None
) -> FolderDuplicates:
    """Groups of the images already in a code store (`tbh duplicates --store S`)."""
    from tbhcli.hashing.perceptual import CODE_VERSION
    from tbhcli.storage.store import open_store
    from tbhcli.workspace import STORE_PATH, resolve_store

    if store is None and not STORE_PATH.exists():  # often: run in a photo folder, no argument
        raise TbhError(
            f"no code store at {STORE_PATH}; to group the photos of a folder, pass it: "
            "`tbh duplicates PHOTOS_DIR` (`tbh duplicates .` for this one)."
        )
    store = resolve_store(store)
    table = open_store(store)
    usual = DEFAULT_RADIUS if table.attrs.get("model") == CODE_VERSION else STORE_RADIUS
    radius = check_radius(usual if radius is None else radius, table.bits)
    groups, usable = store_duplicates(store, radius, threads)
    return _from_store(groups, usable, radius, store)


def _from_store(groups, usable, radius: int, store: Path, seconds=None) -> FolderDuplicates:
    return FolderDuplicates(
        usable.root, groups, radius, len(usable.rows), store, links_among(usable.root, groups),
        missing=usable.missing, outside=usable.outside, changed=usable.changed,
        seconds=seconds or {},
        codes=usable.codes, paths=usable.names,
    )  # fmt: skip
