"""Tiny fixtures for the export/index/query tests: PNG folders, runs on the `tiny` backbone."""

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
