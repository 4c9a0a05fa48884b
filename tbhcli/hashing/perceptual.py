"""A perceptual hash fitted on a folder: the signs of an image's lowest-frequency DCT coefficients.

The recipe of pHash (imagehash's `phash`): a 32 x 32 grayscale thumbnail, its 2-D DCT, one bit
per low-frequency coefficient. Those coefficients barely move under re-encoding, resizing,
brightness/contrast/gamma changes or a small edit, and differ between distinct photos. Two
changes, measured on bench/dedup_quality.py's photo set (docs/duplicates.md):
- more coefficients (default 128 rather than pHash's 64), taken ring by ring from the lowest
  frequency (every (u, v) with max(u, v) < k before any with max(u, v) = k), DC left out;
- each coefficient is thresholded at its median over the folder, not at the image's median,
  so every bit splits the folder's images in half.

The DCT is linear, so the hash is an ordinary `LinearHash` on thumbnail pixels: projection = the
chosen DCT basis images [side^2, bits], mean = the pixels whose coefficients are the medians.
It saves, loads and exports to ONNX like any other run.
"""

import numpy as np
import torch

from tbhcli.errors import TbhError
from tbhcli.hashing.baselines import LinearHash

METHOD = "dct"


def dct_matrix(side: int) -> np.ndarray:
    """The orthonormal DCT-II matrix [side, side]: row u is the u-th cosine basis vector."""
    u = np.arange(side)[:, None]
    i = np.arange(side)[None, :]
    basis = np.cos(np.pi * (2 * i + 1) * u / (2 * side)) * np.sqrt(2 / side)
    basis[0] /= np.sqrt(2)
    return basis


def low_frequencies(side: int, count: int) -> list[tuple[int, int]]:
    """The `count` lowest-frequency (u, v) pairs without DC, ring by ring (module doc)."""
    if not 0 < count < side * side:
        raise TbhError(f"a {side} x {side} thumbnail has {side * side - 1} DCT bits, not {count}.")
    pairs = sorted(
        ((u, v) for u in range(side) for v in range(side)),
        key=lambda uv: (max(uv), uv[0] + uv[1], uv[0]),
    )
    return pairs[1 : count + 1]


def dct_projection(side: int, bits: int) -> np.ndarray:
    """Pixels [side * side] -> chosen DCT coefficients [bits]: the basis images as columns."""
    basis = dct_matrix(side)
    columns = [np.outer(basis[u], basis[v]).ravel() for u, v in low_frequencies(side, bits)]
    return np.stack(columns, axis=1)  # (side^2, bits), orthonormal columns


def fit_dct_hash(pixels: np.ndarray, bits: int) -> LinearHash:
    """Fit the hash on thumbnails flattened to [N, side^2] (row-major), e.g. `gray32` features."""
    pixels = np.asarray(pixels, dtype=np.float64)
    side = int(round(np.sqrt(pixels.shape[1])))
    if pixels.ndim != 2 or side * side != pixels.shape[1]:
        raise TbhError(
            f"the dct hash needs square grayscale thumbnails as features (e.g. --backbone gray32), "
            f"got features of shape {pixels.shape}."
        )
    projection = dct_projection(side, bits)
    medians = np.median(pixels @ projection, axis=0)  # (bits,)
    encoder = LinearHash(side * side, bits)
    # Orthonormal columns: (x - P m) @ P = x @ P - m, so each bit is "coefficient > its median".
    encoder.mean.copy_(torch.from_numpy(projection @ medians))
    encoder.projection.copy_(torch.from_numpy(projection))
    return encoder
