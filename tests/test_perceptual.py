"""tbhcli.hashing.perceptual: the photo code is "DCT coefficient > the image's median", bit by bit,
and the code of an image does not depend on the images beside it."""

import numpy as np
import pytest
import torch

from tbhcli.errors import TbhError
from tbhcli.hashing.perceptual import (
    BITS,
    DCT_BITS,
    dct_bits,
    gradient_bits,
    low_frequencies,
    photo_codes,
)
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


def test_bits_are_low_frequency_coefficients_against_the_image_median():
    rng = np.random.default_rng(0)
    side, bits = 8, 16
    images = rng.random((5, side, side))
    got = dct_bits(images, bits)
    pairs = low_frequencies(side, bits)
    coefficients = np.array([[textbook_dct(img, u, v) for u, v in pairs] for img in images])
    expected = coefficients > np.median(coefficients, axis=1, keepdims=True)
    assert (got == expected).all()
    assert (expected.sum(axis=1) == 8).all()  # each image's bits are half ones


def test_gradient_bits_compare_disjoint_neighbours():
    small = np.random.default_rng(3).random((2, 8, 9))
    expected = [[small[n, r, c + 1] > small[n, r, c] for r in range(8) for c in (0, 2, 4, 6)]
                for n in range(2)]  # fmt: skip
    assert (gradient_bits(small) == np.array(expected)).all()


def photo_rows(n: int, seed: int) -> np.ndarray:
    """`hash_thumbnails` rows: a 32 x 32 and a 9 x 8 thumbnail, flattened."""
    return np.random.default_rng(seed).random((n, 32 * 32 + 72)) * 255


def test_the_code_is_dct_then_gradient_bits():
    rows = photo_rows(3, 4)
    bits = np.unpackbits(photo_codes(rows), axis=1).astype(bool)
    assert bits.shape == (3, BITS)
    assert (bits[:, :DCT_BITS] == dct_bits(rows[:, :1024].reshape(3, 32, 32))).all()
    assert (bits[:, DCT_BITS:] == gradient_bits(rows[:, 1024:].reshape(3, 8, 9))).all()


def test_an_image_gets_the_same_code_alone_or_among_many():
    """Issue 20: a folder median made a photo's code depend on the photos beside it."""
    photo = photo_rows(1, 1)
    crowd = np.concatenate([photo, np.repeat(photo, 6, axis=0) * 0.98, photo_rows(5, 2)])
    assert np.array_equal(photo_codes(photo)[0], photo_codes(crowd)[0])


def test_contrast_and_brightness_do_not_change_the_code():
    photo = photo_rows(1, 2) * 0.8
    assert np.array_equal(photo_codes(photo), photo_codes(photo * 0.7 + 40))


def test_coefficients_go_ring_by_ring_without_dc():
    first = [(0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (2, 2)]
    assert low_frequencies(32, 8) == first
    assert max(max(uv) for uv in low_frequencies(32, 120)) == 10  # 11 x 11 - DC = 120
    with pytest.raises(TbhError, match="63 DCT bits"):
        low_frequencies(8, 64)


def test_thumbnails_must_be_square():
    with pytest.raises(TbhError, match="hash_thumbnails"):
        photo_codes(np.zeros((4, 32 * 30)))


def test_gray32_is_the_luma_thumbnail_and_takes_no_weights(tmp_path):
    backbone = load_backbone("gray32")
    pixels = torch.rand(2, 3, 32, 32)
    luma = 0.299 * pixels[:, 0] + 0.587 * pixels[:, 1] + 0.114 * pixels[:, 2]
    assert torch.allclose(backbone(pixels), luma.flatten(1), atol=1e-6)
    with pytest.raises(TbhError, match="no weights"):
        load_backbone("gray32", tmp_path / "w.pt")
