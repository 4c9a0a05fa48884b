"""Tiny fixtures for the export/index/query tests: PNG folders, runs on the `tiny` backbone, and
whole workspaces built from them (`build_image_workspace`; conftest.py serves them as fixtures)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tbhcli.hashing.baselines import LinearHash
from tbhcli.hashing.runs import load_run, save_run
from tbhcli.imaging.backbones import load_backbone
from tbhcli.imaging.images import load_image

IMAGE_SIZE = 32
FEATURE_DIM = 32  # the tiny backbone's


def make_images(root: Path, classes: dict[str, int], seed: int = 0, start: int = 0) -> list[Path]:
    """Write `classes[name]` random PNGs (36x44, not square) into `root/name/`; return the files."""
    rng = np.random.default_rng(seed)
    files = []
    for name, count in classes.items():
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + count):
            pixels = rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)
            pixels[:, :, rng.integers(3)] //= 4  # tint, so codes differ between images
            path = folder / f"img{i:03d}.png"
            Image.fromarray(pixels).save(path)
            files.append(path)
    return files


def make_lsh_run(path: Path, bits: int = 32, seed: int = 0) -> Path:
    """An LSH run on the tiny backbone's features, with random hyperplanes through a fixed mean."""
    encoder = LinearHash(FEATURE_DIM, bits)
    g = torch.Generator().manual_seed(seed)
    encoder.projection.copy_(torch.randn(FEATURE_DIM, bits, generator=g))
    encoder.mean.copy_(reference_features(torch.rand(64, 3, 32, 32, generator=g)).mean(0))
    config = {
        "method": "lsh",
        "bits": bits,
        "feature_dim": FEATURE_DIM,
        "backbone": "tiny",
        "image_size": IMAGE_SIZE,
        "seed": seed,
    }
    save_run(path, config, encoder)
    return path


@torch.no_grad()
def reference_features(images01: torch.Tensor) -> torch.Tensor:
    """Tiny-backbone features [B, 32] of float images in [0, 1]."""
    return load_backbone("tiny")(images01)


def reference_codes(run_path: Path, files: list[Path]) -> np.ndarray:
    """The slow obvious pipeline: decode each file, backbone in torch, `Run.encode`."""
    pixels = np.stack([load_image(f, IMAGE_SIZE) for f in files])
    features = reference_features(torch.from_numpy(pixels).float() / 255).numpy()
    return load_run(run_path).encode(features)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Brute-force Hamming distances [len(a), len(b)] between packed codes."""
    bits_a, bits_b = np.unpackbits(a, axis=1), np.unpackbits(b, axis=1)
    return (bits_a[:, None, :] != bits_b[None, :, :]).sum(axis=2)


@dataclass
class ImageWorkspace:
    """A workspace as `tbh` leaves it: runs/lshBITS, onnx/lshBITS.onnx, images/, queries/."""

    root: Path
    run: Path
    model: Path
    images: list[Path]  # database image files, in folder order
    queries: list[Path]  # query image files (queries/), maybe none
    store: Path | None  # codes.zarr when indexed


def build_image_workspace(
    root: Path,
    bits: int = 16,
    classes: dict[str, int] | None = None,
    query_classes: dict[str, int] | None = None,
    index: bool = True,
    record_queries: bool = False,
    features: bool = False,
) -> ImageWorkspace:
    """Images (default cat 20, dog 20, 5 at the root), an LSH run and its images model; with
    `index`, ./codes.zarr (its query set too with `record_queries`); with `features`,
    images.npy and queries.npy on the tiny backbone."""
    from tbhcli.deploy.export import export
    from tbhcli.imaging.embed import features as embed
    from tbhcli.indexing.index import index as index_images

    run = make_lsh_run(root / "runs" / f"lsh{bits}", bits=bits)
    model = export(run, out=root / "onnx" / f"lsh{bits}.onnx")
    images = make_images(root / "images", classes or {"cat": 20, "dog": 20, "": 5})
    queries = make_images(root / "queries", query_classes, seed=9) if query_classes else []
    if features:
        for name in ("images", "queries") if queries else ("images",):
            embed(root / name, root / f"{name}.npy", backbone="tiny", workers=0)
    store = None
    if index:
        store = root / "codes.zarr"
        query_images = root / "queries" if record_queries else None
        index_images(
            root / "images", store, model, query_images=query_images, workers=0, device="cpu"
        )
    return ImageWorkspace(root, run, model, images, queries, store)
