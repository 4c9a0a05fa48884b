from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tbhcli.errors import TbhError
from tbhcli.imaging.images import ImageDecodeError, label_of, list_images, load_image


def _save(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def test_list_images_recursive_sorted_filtered(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    for rel in ["b/2.png", "a/1.JPG", "a/sub/0.jpeg", "root.webp", "c/x.TIFF", "a/z.bmp"]:
        _save(tmp_path / rel, rgb)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    _save(tmp_path / ".hidden" / "h.png", rgb)
    _save(tmp_path / "a" / ".secret.png", rgb)
    (tmp_path / "folder.png").mkdir()  # a directory with an image-like name

    found = list_images(tmp_path)
    expected = ["a/1.JPG", "a/sub/0.jpeg", "a/z.bmp", "b/2.png", "c/x.TIFF", "root.webp"]
    assert [p.as_posix() for p in found] == expected
    assert all(not p.is_absolute() for p in found)


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(TbhError, match="not found"):
        list_images(tmp_path / "nope")


def test_load_image_rgb_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    out = load_image(_save(tmp_path / "x.png", pixels), 20)
    assert out.shape == (3, 20, 20) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels.transpose(2, 0, 1))  # same size: lossless

    flat = np.full((30, 30, 3), (200, 100, 50), np.uint8)
    jpeg = load_image(_save(tmp_path / "x.jpg", flat, quality=95), 16)
    assert jpeg.shape == (3, 16, 16)
    assert np.abs(jpeg.astype(int) - np.array([200, 100, 50])[:, None, None]).max() <= 3


def test_load_image_grayscale_and_rgba_become_rgb(tmp_path):
    gray = load_image(_save(tmp_path / "g.png", np.full((10, 10), 77, np.uint8)), 8)
    assert gray.shape == (3, 8, 8) and (gray == 77).all()
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255
    red = load_image(_save(tmp_path / "a.png", rgba), 8)
    assert red.shape == (3, 8, 8)
    assert (red[0] == 255).all() and (red[1:] == 0).all()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(tmp_path, suffix):
    # Every 16-bit value from 0 to 65535 once (a 256 x 256 gradient), including each value whose
    # 8-bit rounding flips (257 k +- 128): clipping would turn all but 256 of them into 255.
    wide = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = _save(tmp_path / f"g16{suffix}", wide)
    assert Image.open(path).mode.startswith("I")  # really decoded as 16-bit
    out = load_image(path, 256)  # same size: no resampling
    expected = np.round(wide / 257).astype(np.uint8)  # the slow obvious reference
    assert np.abs(expected.astype(int) - (wide >> 8)).max() <= 1  # and close to value >> 8
    for channel in out:
        np.testing.assert_array_equal(channel, expected)
    assert len(np.unique(out)) == 256


def test_load_image_center_crops_the_longer_side(tmp_path):
    # 10 x 30 (h x w): left and right thirds are black, the middle square is white.
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255
    out = load_image(_save(tmp_path / "wide.png", wide), 10)
    assert (out == 255).all()


def test_bad_files_raise_image_decode_error(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = _save(tmp_path / "full.jpg", pixels).read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image at all")
    (tmp_path / "truncated.jpg").write_bytes(full[: len(full) // 2])
    for name in ["empty.png", "garbage.jpg", "truncated.jpg"]:
        with pytest.raises(ImageDecodeError, match=f"cannot decode image {tmp_path / name}: "):
            load_image(tmp_path / name, 16)
    assert issubclass(ImageDecodeError, TbhError)


def test_label_of():
    assert label_of(Path("cat/x.jpg")) == "cat"
    assert label_of(Path("cat/sub/x.jpg")) == "cat"
    assert label_of(Path("x.jpg")) is None
