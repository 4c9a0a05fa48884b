"""The GPU JPEG path (imaging/nvjpeg.py), run here through torchvision's CPU decoder: same
geometry as Pillow's `load_image` within a few grey levels, Pillow for everything else."""

import numpy as np
from PIL import Image

from tbhcli.imaging.images import load_image
from tbhcli.imaging.nvjpeg import decode_files


def _photo(path, h, w, seed):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(0, 255, 3)
    pixels = ramp + np.linspace(0, 60, h)[:, None, None] + rng.normal(0, 8, (h, w, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def test_jpegs_match_pillow_and_the_rest_falls_back(tmp_path):
    jpegs = [
        _photo(tmp_path / f"{i}.jpg", h, w, i) for i, (h, w) in enumerate([(90, 120), (77, 50)])
    ]
    rotated = tmp_path / "rotated.jpg"  # EXIF orientation 6: only Pillow applies it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(jpegs[0]).save(rotated, exif=exif)
    png = tmp_path / "x.png"
    Image.open(jpegs[1]).save(png)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    files = [jpegs[0], tmp_path / "bad.jpg", rotated, png, jpegs[1], tmp_path / "gone.jpg"]
    pixels, ok, errors = decode_files(files, 32, device="cpu")
    assert ok == [0, 2, 3, 4] and [i for i, _ in errors] == [1, 5]
    assert pixels.shape == (4, 3, 32, 32) and pixels.dtype == np.uint8
    reference = [load_image(files[i], 32) for i in ok]
    np.testing.assert_array_equal(pixels[1], reference[1])  # rotated: Pillow's own pixels
    np.testing.assert_array_equal(pixels[2], reference[2])  # PNG: Pillow
    for got, want in [(pixels[0], reference[0]), (pixels[3], reference[3])]:
        diff = np.abs(got.astype(int) - want)
        assert diff.mean() < 1.5 and diff.max() <= 8  # 77x50: crop offset 13 vs 13.5
