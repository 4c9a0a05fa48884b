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


def _aspect(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Resized to another aspect ratio: 80 % of the width, 55 % of the height."""
    return img.resize((round(img.width * 0.8), round(img.height * 0.55)), Image.Resampling.LANCZOS)


def _crop_brighten(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A 6 % crop, brightness 1.15, resized back to the original size (an edited copy)."""
    edited = ImageEnhance.Brightness(_crop(0.06)(img, rng)).enhance(1.15)
    return edited.resize(img.size, Image.Resampling.LANCZOS)


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
    "jpeg-q20": lambda img, rng: img,  # re-encoded by SAVE_AS
    "jpeg-q50": lambda img, rng: img,  # re-encoded by SAVE_AS
    "jpeg-q90": lambda img, rng: img,  # re-encoded by SAVE_AS
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
    "aspect": _aspect,
    "bmp": lambda img, rng: img,  # the same pixels in another container (SAVE_AS)
    "webp": lambda img, rng: img,
    "resize-0.7+jpeg-q35": _resize(0.7),
    "crop+brightness": _crop_brighten,
    "upscale-1.5+jpeg-q60": _resize(1.5),
}
# How a copy is written (suffix, Pillow save options); the rest are lossless PNG.
SAVE_AS: dict[str, tuple[str, dict]] = {
    "jpeg-q20": (".jpg", {"quality": 20}),
    "jpeg-q50": (".jpg", {"quality": 50}),
    "jpeg-q90": (".jpg", {"quality": 90}),
    "bmp": (".bmp", {}),
    "webp": (".webp", {"quality": 75}),
    "resize-0.7+jpeg-q35": (".jpg", {"quality": 35}),
    "upscale-1.5+jpeg-q60": (".jpg", {"quality": 60}),
}
FLIPS: dict[str, Callable] = {
    "hflip": lambda img, rng: ImageOps.mirror(img),
    "rotate-90": lambda img, rng: img.rotate(90, expand=True),
}


def whole_photos(limit: int | None = None, seed: int = 0, max_side: int = 512) -> dict:
    """Distinct originals: the whole photographs of `_photographs`, longest side <= max_side."""
    return {name: _shrunk(Image.fromarray(photo), max_side)
            for name, photo in sorted(_photographs().items())}  # fmt: skip


# One file per artwork of Debian's wallpaper packages (gnome-backgrounds, desktop-base,
# mate-backgrounds): variants of one artwork (light/dark, other resolutions) are left out, so
# that the originals are distinct pictures.
DEBIAN_GLOBS = (
    "/usr/share/backgrounds/mate/nature/*.jpg",
    "/usr/share/backgrounds/mate/abstract/[!E]*.png",
    "/usr/share/backgrounds/mate/abstract/Elephants.jpg",
    "/usr/share/backgrounds/mate/desktop/Ubuntu-Mate-Warm-no-logo.png",
    "/usr/share/backgrounds/mate/desktop/GreenTraditional.jpg",
    "/usr/share/backgrounds/mate/desktop/Float-into-MATE.png",
    "/usr/share/backgrounds/gnome/*-l.webp",
    "/usr/share/desktop-base/[!j]*-theme/grub/grub-16x9.png",  # joy-inksplat = joy: one kept
    "/usr/share/desktop-base/joy-theme/grub/grub-16x9.png",
)


def debian_wallpapers(limit: int | None = None, seed: int = 0, max_side: int = 640) -> dict:
    """Distinct originals: Debian's wallpapers (`DEBIAN_GLOBS`), longest side <= max_side."""
    from glob import glob

    files = sorted(f for pattern in DEBIAN_GLOBS for f in glob(pattern))
    if not files:
        raise SystemExit("no wallpapers: apt-get install gnome-backgrounds desktop-base "
                         "mate-backgrounds")  # fmt: skip
    out = {}
    for file in files:
        with Image.open(file) as img:  # transparency over mid-grey: white and black motifs show
            rgba = img.convert("RGBA")
            picture = Image.alpha_composite(Image.new("RGBA", rgba.size, "#808080"), rgba)
            picture = _shrunk(picture.convert("RGB"), max_side)
        theme = Path(file).parent.parent.name if "grub" in file else Path(file).parent.name
        if np.asarray(picture.convert("L")).std() >= MIN_STD:  # not a flat colour
            out[f"{theme}-{Path(file).stem}"] = picture
    return out


def _shrunk(img: Image.Image, max_side: int) -> Image.Image:
    scale = min(1.0, max_side / max(img.size))
    size = (round(img.width * scale), round(img.height * scale))
    return img.resize(size, Image.Resampling.LANCZOS) if scale < 1 else img.copy()


SETS: dict[str, Callable] = {"tiles": originals, "whole": whole_photos, "debian": debian_wallpapers}


def write_photo_set(
    out: Path, limit: int | None = None, seed: int = 0, photo_set: str = "tiles"
) -> list[Path]:
    """Write OUT/<original>/original.png and one file per transform; returns every path, sorted.

    Copies are lossless PNG unless `SAVE_AS` names another format (JPEG re-encodes, BMP, WebP),
    so each copy differs from its original by its named transform only.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    for name, tile in SETS[photo_set](limit, seed).items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        tile.save(folder / "original.png")
        for transform_name, transform in {**TRANSFORMS, **FLIPS}.items():
            copy = transform(tile, rng)
            suffix, options = SAVE_AS.get(transform_name, (".png", {}))
            copy.save(folder / f"{transform_name}{suffix}", **options)
    return sorted(p.relative_to(out) for p in out.rglob("*.*"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--originals", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", choices=sorted(SETS), default="tiles", dest="photo_set")
    args = parser.parse_args()
    paths = write_photo_set(args.out, args.originals, args.seed, args.photo_set)
    print(f"wrote {len(paths)} images to {args.out}")
