"""The photo code of `tbh duplicates`: 192 bits computed from one photo alone.

- 160 bits after pHash (imagehash's `phash`): a 32 x 32 grayscale thumbnail of the whole
  picture, its 2-D DCT, one bit per low-frequency coefficient (ring by ring from the lowest:
  every (u, v) with max(u, v) < k before any with max(u, v) = k; DC left out), set when the
  coefficient is above the median of those coefficients *of the same image*;
- 32 bits after dHash: on a 9 x 8 thumbnail, whether a pixel is brighter than its left
  neighbour, for four disjoint pairs of neighbours per row (columns 0-1, 2-3, 4-5, 6-7).
Every bit is a comparison within the image, so it does not move with brightness or contrast,
and a photo's code depends on that photo alone: the same file gets the same code in any folder,
alone or among millions, and codes of two folders compare. (tbh 0.1 thresholded each DCT
coefficient at its median over the folder: in a small or copy-heavy folder that median falls
inside one photo's own spread, issue 20.) The thumbnails squeeze the whole picture (no centre
crop), so a copy resized to another aspect ratio keeps its code. The mix of the two parts was
chosen with the radius on bench/dedup_quality.py --set tiles, and checked on the other sets
(docs/duplicates.md): DCT bits tell smooth pictures apart, gradient bits survive crops.

Pure numpy: hashing a folder imports no torch. `CODE_VERSION` names the recipe; a cache of
codes made by any other recipe is recomputed, never mixed.
"""

from functools import cache

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.imaging.thumbnails import GRADIENT_SIZE, SIDE

METHOD = "dct+dhash"
DCT_BITS = 160
BITS = 192  # DCT_BITS + 32 gradient bits
CODE_VERSION = "tbh-dct160-dhash32/2"  # whole picture; bumped whenever a code would change


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


@cache
def _basis(side: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The DCT matrix and the row / column index arrays of the chosen coefficients."""
    pairs = np.array(low_frequencies(side, bits))
    return dct_matrix(side), pairs[:, 0], pairs[:, 1]


def dct_coefficients(thumbnails: np.ndarray, bits: int = DCT_BITS) -> np.ndarray:
    """Thumbnails float [N, side, side] (rows = image rows) -> chosen coefficients [N, bits]."""
    thumbnails = np.asarray(thumbnails, dtype=np.float64)
    if thumbnails.ndim != 3 or thumbnails.shape[1] != thumbnails.shape[2]:
        raise TbhError(f"the dct hash needs square thumbnails [N, S, S], got {thumbnails.shape}.")
    basis, u, v = _basis(thumbnails.shape[1], bits)
    full = basis @ thumbnails @ basis.T  # (N, side, side): full[n, u, v], u down, v across
    return full[:, u, v]


def dct_bits(thumbnails: np.ndarray, bits: int = DCT_BITS) -> np.ndarray:
    """Bool [N, bits]: coefficient j > the image's median coefficient (module doc)."""
    coefficients = dct_coefficients(thumbnails, bits)  # (N, bits)
    return coefficients > np.median(coefficients, axis=1, keepdims=True)


def gradient_bits(small: np.ndarray) -> np.ndarray:
    """Bool [N, H * (W // 2)] of thumbnails [N, H, W]: for the disjoint pairs of columns
    (0, 1), (2, 3), ..., whether the right pixel is brighter than the left one."""
    pairs = small[:, :, : small.shape[2] // 2 * 2]
    return (pairs[:, :, 1::2] > pairs[:, :, 0::2]).reshape(len(small), -1)


def photo_codes(thumbnails: np.ndarray) -> np.ndarray:
    """Packed codes uint8 [N, BITS / 8] of `hash_thumbnails` rows float [N, SIDE^2 + 9 * 8]."""
    width, height = GRADIENT_SIZE
    thumbnails = np.asarray(thumbnails, dtype=np.float64)
    if thumbnails.ndim != 2 or thumbnails.shape[1] != SIDE * SIDE + width * height:
        raise TbhError(f"photo codes need `hash_thumbnails` rows, got {thumbnails.shape}.")
    square = thumbnails[:, : SIDE * SIDE].reshape(-1, SIDE, SIDE)
    small = thumbnails[:, SIDE * SIDE :].reshape(-1, height, width)
    return np.packbits(np.hstack([dct_bits(square), gradient_bits(small)]), axis=1)
