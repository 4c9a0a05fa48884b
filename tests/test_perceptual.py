"""tbhcli.hashing.perceptual: the dct hash equals "DCT coefficient > folder median", bit by bit."""

import numpy as np
import pytest
import torch

from tbhcli.errors import TbhError
from tbhcli.hashing.perceptual import fit_dct_hash, low_frequencies
from tbhcli.imaging.backbones import load_backbone


def textbook_dct(image: np.ndarray, u: int, v: int) -> float:
    """Coefficient (u, v) of the orthonormal 2-D DCT-II, straight from its definition."""
    n = image.shape[0]
    total = 0.0
    for x in range(n):
        for y in range(n):
            total += (
                image[x, y]
                * np.cos(np.pi * (2 * x + 1) * u / (2 * n))
                * np.cos(np.pi * (2 * y + 1) * v / (2 * n))
            )
    scale = lambda k: np.sqrt((1 if k == 0 else 2) / n)  # noqa: E731
    return scale(u) * scale(v) * total


def test_bits_are_low_frequency_coefficients_against_their_median():
    rng = np.random.default_rng(0)
    side, bits = 8, 16
    images = rng.random((16, side, side))  # even: no image sits on a median
    encoder = fit_dct_hash(images.reshape(16, -1), bits)
    with torch.no_grad():
        got = encoder(torch.from_numpy(images.reshape(16, -1)).float()).numpy() > 0
    pairs = low_frequencies(side, bits)
    coefficients = np.array([[textbook_dct(img, u, v) for u, v in pairs] for img in images])
    expected = coefficients > np.median(coefficients, axis=0)
    assert (got == expected).all()
    assert (expected.sum(axis=0) == 8).all()  # each bit splits the images in half


def test_coefficients_go_ring_by_ring_without_dc():
    first = [(0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (2, 2)]
    assert low_frequencies(32, 8) == first
    assert max(max(uv) for uv in low_frequencies(32, 120)) == 10  # 11 x 11 - DC = 120
    with pytest.raises(TbhError, match="63 DCT bits"):
        low_frequencies(8, 64)


def test_features_must_be_square_thumbnails():
    with pytest.raises(TbhError, match="square grayscale thumbnails"):
        fit_dct_hash(np.zeros((4, 1000)), 16)


def test_gray32_is_the_luma_thumbnail_and_takes_no_weights(tmp_path):
    backbone = load_backbone("gray32")
    pixels = torch.rand(2, 3, 32, 32)
    luma = 0.299 * pixels[:, 0] + 0.587 * pixels[:, 1] + 0.114 * pixels[:, 2]
    assert torch.allclose(backbone(pixels), luma.flatten(1), atol=1e-6)
    with pytest.raises(TbhError, match="no weights"):
        load_backbone("gray32", tmp_path / "w.pt")
