"""Photo -> the grayscale thumbnails of the whole picture that `tbh duplicates` hashes.

Unlike `images.load_image` (a centre crop for CNN backbones), the whole picture is squeezed to
side x side, so a copy resized to another aspect ratio gives the same thumbnail. JPEGs are decoded
at reduced size (Pillow's draft mode: the DCT decoder scales by 1/2..1/8 for free), since the
hash needs 32 pixels a side. EXIF rotation is applied; transparent pixels are shown over mid-grey
(so white and black motifs on transparency both show); wide and float pixels are scaled by
`images.to_rgb`.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tbhcli.imaging.images import IMAGE_DECODE_ERRORS, decode_error, to_rgb

SIDE = 32  # side of the thumbnail whose DCT the photo code holds, pixels
DRAFT_FACTOR = 4  # JPEGs are decoded to at least 4 x the thumbnail side before the resize
GRADIENT_SIZE = (9, 8)  # (width, height) of the thumbnail whose row gradients the code holds


def _gray_picture(path: Path, side: int) -> Image.Image:
    """The whole picture as 8-bit luma ("L"), transparency over mid-grey."""
    with Image.open(path) as img:
        img.draft("RGB", (side * DRAFT_FACTOR, side * DRAFT_FACTOR))  # JPEG only, else no-op
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, "#808080"), rgba)
        elif img.mode not in ("L", "RGB", "P", "1"):
            img = to_rgb(img)
        return img.convert("L")


def gray_thumbnail(path: Path, side: int = SIDE) -> np.ndarray:
    """Luma of the whole picture resized to side x side (Lanczos), float32 [side, side] 0..255."""
    try:
        picture = _gray_picture(path, side)
        return np.asarray(picture.resize((side, side), Image.Resampling.LANCZOS), np.float32)
    except IMAGE_DECODE_ERRORS as exc:
        raise decode_error(path, exc) from None


# The picture itself, then its mirrored and rotated versions (`--mirror`): the 8 symmetries.
DIHEDRAL = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


def _hash_rows(picture: Image.Image, side: int) -> np.ndarray:
    square = picture.resize((side, side), Image.Resampling.LANCZOS)
    small = picture.resize(GRADIENT_SIZE, Image.Resampling.LANCZOS)
    return np.concatenate([np.asarray(square, np.float32).ravel(),
                           np.asarray(small, np.float32).ravel()])  # fmt: skip


def hash_thumbnails(path: Path, side: int = SIDE) -> np.ndarray:
    """What the photo code is made of, from one decode: the side x side thumbnail and the
    `GRADIENT_SIZE` one, flattened and concatenated, float32 [side^2 + 9 * 8] (Lanczos)."""
    try:
        return _hash_rows(_gray_picture(path, side), side)
    except IMAGE_DECODE_ERRORS as exc:
        raise decode_error(path, exc) from None


def dihedral_hash_thumbnails(path: Path, side: int = SIDE) -> np.ndarray:
    """`hash_thumbnails` of the picture and of its 7 mirrored / rotated versions (`DIHEDRAL`),
    from one decode, concatenated: float32 [8 * (side^2 + 9 * 8)]."""
    try:
        picture = _gray_picture(path, side)
        turned = [picture if t is None else picture.transpose(t) for t in DIHEDRAL]
        return np.concatenate([_hash_rows(p, side) for p in turned])
    except IMAGE_DECODE_ERRORS as exc:
        raise decode_error(path, exc) from None
