"""A near-duplicate photo set built offline from the photographs that installed packages ship.

Distinct originals are non-overlapping TILE x TILE tiles of real photographs bundled with
scikit-image (`skimage.data`), scikit-learn (`load_sample_images`) and matplotlib (sample data);
near-flat tiles (sky, black borders) are dropped, since two of them are not distinct photos.
Each original gets one copy per named transform (`TRANSFORMS`); `FLIPS` are reported apart,
because many tools do not claim them. Ground truth: an original and its copies are duplicates of
each other, nothing else is. Everything is deterministic given the seed.

    python bench/dedup_photos.py OUT_DIR [--originals N]   # writes OUT_DIR/<original>/<transform>.*
"""

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

TILE = 128
MIN_STD = 12.0  # grey-level std below which a tile is too flat to be a distinct photo


def _photographs() -> dict[str, np.ndarray]:
    """Name -> RGB uint8 [H, W, 3] of every real photograph that ships offline."""
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {}
    for name in (
        "astronaut",
        "camera",
        "chelsea",
        "coffee",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "brick",
        "grass",
        "gravel",
        "moon",
        "coins",
        "clock",
    ):
        photos[name] = getattr(skimage.data, name)()
    photos["motorcycle"] = skimage.data.stereo_motorcycle()[0]  # the right view is a near copy
    sklearn_images = load_sample_images()
    for name, image in zip(sklearn_images.filenames, sklearn_images.images, strict=True):
        photos[Path(name).stem] = image
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photos["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    return {k: np.dstack([v] * 3) if v.ndim == 2 else v[..., :3] for k, v in photos.items()}


def originals(limit: int | None = None, seed: int = 0) -> dict[str, Image.Image]:
    """Distinct originals: name "<photo>-<row>-<col>" -> TILE x TILE RGB tile.

    With `limit`, a seeded random subset of that many (so every photo stays represented).
    """
    tiles = {}
    for name, photo in sorted(_photographs().items()):
        for r in range(photo.shape[0] // TILE):
            for c in range(photo.shape[1] // TILE):
                tile = photo[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
                if tile.mean(axis=2).std() >= MIN_STD:
                    tiles[f"{name}-{r}-{c}"] = Image.fromarray(np.ascontiguousarray(tile))
    if limit is not None and limit < len(tiles):
        keep = np.random.default_rng(seed).choice(len(tiles), limit, replace=False)
        names = sorted(tiles)
        tiles = {names[i]: tiles[names[i]] for i in sorted(keep)}
    return tiles


def _jpeg(quality: int) -> Callable:
    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))

    return transform


def _resize(scale: float) -> Callable:
    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        size = (round(img.width * scale), round(img.height * scale))
        return img.resize(size, Image.Resampling.LANCZOS)

    return transform


def _crop(fraction: float) -> Callable:
    """Each side cut by a random 0..fraction of the side (at least half of it)."""

    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        cuts = rng.uniform(fraction / 2, fraction, 4)
        w, h = img.size
        box = (cuts[0] * w, cuts[1] * h, w - cuts[2] * w, h - cuts[3] * h)
        return img.crop(tuple(round(v) for v in box))

    return transform


def _rotate(degrees: float) -> Callable:
    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        sign = rng.choice([-1.0, 1.0])
        return img.rotate(sign * degrees, Image.Resampling.BILINEAR)  # black corners, same size

    return transform


def _text(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(10, img.height // 8))
    y = rng.uniform(0.1, 0.7) * img.height
    draw.text((img.width * 0.05, y), "© holiday 2024", fill=(255, 255, 255), font=font,
              stroke_width=1, stroke_fill=(0, 0, 0))  # fmt: skip
    return out


def _logo(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    import skimage.data

    logo = Image.fromarray(skimage.data.logo())  # RGBA
    side = img.width // 4
    logo = logo.resize((side, side), Image.Resampling.LANCZOS)
    out = img.copy()
    corner = rng.integers(4)
    x = 4 if corner % 2 == 0 else img.width - side - 4
    y = 4 if corner < 2 else img.height - side - 4
    out.paste(logo, (x, y), logo)
    return out


TRANSFORMS: dict[str, Callable] = {
    "jpeg-q20": _jpeg(20),
    "jpeg-q50": _jpeg(50),
    "jpeg-q90": _jpeg(90),
    "resize-0.3": _resize(0.3),
    "resize-0.5": _resize(0.5),
    "resize-2": _resize(2.0),
    "crop-5": _crop(0.05),
    "crop-10": _crop(0.10),
    "brightness": lambda img, rng: ImageEnhance.Brightness(img).enhance(1.3),
    "contrast": lambda img, rng: ImageEnhance.Contrast(img).enhance(0.7),
    "gamma": lambda img, rng: img.point(lambda v: round(255 * (v / 255) ** 0.7)),
    "rotate-2": _rotate(2.0),
    "rotate-5": _rotate(5.0),
    "text": _text,
    "logo": _logo,
    "grayscale": lambda img, rng: ImageOps.grayscale(img).convert("RGB"),
}
FLIPS: dict[str, Callable] = {
    "hflip": lambda img, rng: ImageOps.mirror(img),
    "rotate-90": lambda img, rng: img.rotate(90, expand=True),
}


def write_photo_set(out: Path, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Write OUT/<original>/original.png and one file per transform; returns every path, sorted.

    JPEG copies are .jpg files (the re-encoding is the transform); all other files are lossless
    PNG, so each copy differs from its original by its named transform only.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    for name, tile in originals(limit, seed).items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        tile.save(folder / "original.png")
        for transform_name, transform in {**TRANSFORMS, **FLIPS}.items():
            copy = transform(tile, rng)
            if transform_name.startswith("jpeg-q"):  # the same encoding, written as it is
                tile.save(folder / f"{transform_name}.jpg", quality=int(transform_name[6:]))
            else:
                copy.save(folder / f"{transform_name}.png")
    return sorted(p.relative_to(out) for p in out.rglob("*.*"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--originals", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = write_photo_set(args.out, args.originals, args.seed)
    print(f"wrote {len(paths)} images to {args.out}")
