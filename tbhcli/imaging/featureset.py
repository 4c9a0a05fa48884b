"""Feature sets on disk: `NAME.npy` float32 [N, D], optional labels in `NAME.labels.npy`.

Labels are int [N] (single-label) or 0/1 [N, C] (multi-label); two items are relevant to each other
when they share a label. Files are read with `allow_pickle=False`, so an untrusted .npy is safe.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tbhcli.atomic import atomic_output, write_text_atomic
from tbhcli.errors import TbhError


@dataclass
class FeatureSet:
    """Feature vectors [N, D] float32 with optional labels [N] or [N, C]."""

    features: np.ndarray
    labels: np.ndarray | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]


def labels_path(path: Path) -> Path:
    """`NAME.npy` -> `NAME.labels.npy`."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".npy") + ".labels.npy")


_MAKE_FEATURES = "make features from images with `tbh features IMAGES_DIR -o NAME.npy`"


def _load_array(path: Path, what: str) -> np.ndarray:
    if path.is_dir():
        raise TbhError(f"{path} is a folder, not a {what} file NAME.npy; {_MAKE_FEATURES}.")
    if not path.is_file():
        raise TbhError(f"{what} file not found: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(6)
        if magic.startswith(b"PK"):  # a zip: what np.savez writes, whatever the file's name
            raise TbhError(
                f"{what} file {path} is an .npz archive, not one .npy array; save the array "
                "with np.save."
            )
        if magic != b"\x93NUMPY":  # the .npy magic: an image, a CSV... is not one
            raise TbhError(f"{path} is not a NumPy .npy file of {what}; {_MAKE_FEATURES}.")
        return np.load(path, allow_pickle=False)
    except TbhError:
        raise
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise TbhError(f"cannot read {what} file {path}: {exc}") from None
        raise TbhError(  # numpy's advice (allow_pickle=True) would run code from the file
            f"{path} holds Python objects, not numbers; tbh never unpickles a file: save the "
            f"{what} as a numeric array (np.save(NAME, array.astype(np.float32)))."
        ) from None
    except Exception as exc:  # numpy raises several types for a bad file
        raise TbhError(f"cannot read {what} file {path}: {exc}") from None


def check_features(features: np.ndarray, where: str = "features") -> np.ndarray:
    """Validate a feature matrix (2-D, numeric, finite) and return it as float32."""
    if features.ndim != 2:
        raise TbhError(f"{where} must be a 2-D array [N, D], got shape {features.shape}.")
    kind = features.dtype
    if not (np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.floating)):
        # complex is a number too, but float32 would silently drop its imaginary part
        raise TbhError(f"{where} must be real numbers (int or float), got dtype {kind}.")
    features = np.ascontiguousarray(features, dtype=np.float32)
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise TbhError(
            f"{where} contain NaN or inf in {len(rows)} rows (first: row {rows[0]}); "
            "clean or drop those rows."
        )
    return features


def check_labels(labels: np.ndarray, n: int, where: str = "labels") -> np.ndarray:
    """Validate labels against N items: int [N] or 0/1 [N, C]."""
    if labels.ndim not in (1, 2):
        raise TbhError(f"{where} must be [N] or [N, C], got shape {labels.shape}.")
    if len(labels) != n:
        raise TbhError(f"{where} have {len(labels)} rows but the features have {n}.")
    if labels.ndim == 2:
        if not np.isin(labels, (0, 1)).all():
            raise TbhError(f"multi-label {where} [N, C] must be 0/1.")
        return labels.astype(bool)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TbhError(f"{where} must be integers, got dtype {labels.dtype}.")
    return labels.astype(np.int64)


def check_label_kinds(db_labels: np.ndarray, query_labels: np.ndarray) -> None:
    """Database and query labels must be comparable: both int [N], or both 0/1 [N, C], same C."""
    if db_labels.ndim != query_labels.ndim:
        raise TbhError("database and query labels differ in kind (single- vs multi-label).")
    if db_labels.ndim == 2 and db_labels.shape[1] != query_labels.shape[1]:
        raise TbhError(
            f"database labels have {db_labels.shape[1]} classes but query labels have "
            f"{query_labels.shape[1]}; label both with the same class list."
        )


def load_features(path: str | Path, require_labels: bool = False) -> FeatureSet:
    """Load and validate `NAME.npy` (+ `NAME.labels.npy` when present)."""
    path = Path(path)
    features = check_features(_load_array(path, "features"), f"features in {path}")
    lpath = labels_path(path)
    labels = None
    if lpath.is_file():
        labels = check_labels(_load_array(lpath, "labels"), len(features), f"labels in {lpath}")
    elif require_labels:
        raise TbhError(f"no labels for {path}: expected {lpath} (int [N] or 0/1 [N, C]).")
    return FeatureSet(features, labels, path)


def save_features(path: str | Path, features: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """Write `NAME.npy` (+ `NAME.labels.npy`) following the feature-set convention."""
    path = Path(path)
    features = check_features(np.asarray(features), f"features for {path}")  # never NaN on disk
    with atomic_output(path) as tmp:
        np.save(tmp, features)
    if labels is not None:
        with atomic_output(labels_path(path)) as tmp:
            np.save(tmp, labels)
    return path


def meta_path(path: Path) -> Path:
    """`NAME.npy` -> `NAME.meta.json`: how the features were made (backbone, image size, ...)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".npy") + ".meta.json")


def load_meta(path: str | Path) -> dict:
    """The feature set's provenance (`{}` for features made outside tbh)."""
    mpath = meta_path(Path(path))
    if not mpath.is_file():
        return {}
    try:
        return json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise TbhError(f"cannot read {mpath} ({exc}); fix or delete it.") from None


def save_meta(path: str | Path, meta: dict) -> None:
    write_text_atomic(meta_path(Path(path)), json.dumps(meta, indent=2) + "\n")
