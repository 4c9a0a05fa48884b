"""Image folders -> uint8 pixels: the one decoder that `tbh features` and `tbh index` share.

Every image is decoded by Pillow, EXIF-rotated, converted to 8-bit RGB (`to_rgb`), then
center-cropped to a square and resized to `size` x `size` (bilinear): the shorter side becomes
`size`, the longer side is cut evenly on both ends. Using this one function everywhere is what
makes codes from `tbh index` equal to codes from `tbh features` + a run. The functions are
top-level and take plain paths, so they can run in worker processes.
"""

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tbhcli.errors import TbhError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif"}
    | {".ppm", ".pgm", ".pbm", ".pnm"}
)
# The Pillow formats of those extensions: all that bytes from a client may be decoded as.
UPLOAD_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")

# What Pillow raises for unreadable, truncated or hostile files.
IMAGE_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageDecodeError(TbhError):
    """A file that looks like an image but cannot be decoded (corrupt, truncated, empty).

    `reason` is why, without the file's name: what lists of skipped files show beside the name.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = message if reason is None else reason


def decode_error(source: Path | BinaryIO, exc: Exception) -> ImageDecodeError:
    """The error for a file Pillow failed on with `exc` (one of `IMAGE_DECODE_ERRORS`)."""
    reason = _reason(exc)
    return ImageDecodeError(f"cannot decode image {_name(source)}: {reason}", reason)


def default_workers() -> int:
    """Decoding processes: one per core, at most 8 (the model needs the rest of the cores)."""
    return min(8, len(os.sched_getaffinity(0)))


def check_workers(workers: int | None) -> int:
    """A `--workers` value: 0 (decode in this process) or more; None -> `default_workers()`."""
    if workers is None:
        return default_workers()
    if workers < 0:
        raise TbhError(f"--workers must be 0 (decode in this process) or more (got {workers}).")
    return workers


def list_images(root: Path) -> list[Path]:
    """All image files under `root`, recursively, sorted, as paths relative to `root`.

    Matches `IMAGE_EXTENSIONS` case-insensitively and skips hidden files and folders (".name").
    """
    root = Path(root)
    if not root.is_dir():
        raise TbhError(f"image folder not found: {root}; pass a directory of images.")
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        found.append(rel)
    return sorted(found)


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` as 8-bit RGB. Wide grayscale is scaled, where `convert("RGB")` would clip it:
    16-bit (modes I;16*, and I as Pillow opens such PNG/TIFF files) by round(value / 257);
    32-bit float (mode F) from 0..1 when its values lie there (the usual convention), else
    from its own finite minimum..maximum; non-finite pixels become black."""
    if img.mode == "F":
        img = Image.fromarray(_float_to_uint8(np.asarray(img, dtype=np.float64)))
    elif img.mode == "I" or img.mode.startswith("I;16"):
        wide = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)  # (H, W)
        img = Image.fromarray(((wide + 128) // 257).astype(np.uint8))  # "L"
    return img.convert("RGB")


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Float pixels [H, W] -> uint8 [H, W] (`to_rgb`): 0..1 -> 0..255, else min..max -> 0..255."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    if low < 0 or high > 1:  # not the 0..1 convention: stretch the range that is there
        values = (values - low) / (high - low) if high > low else values * 0
    scaled = np.where(finite, np.clip(values, 0, 1) * 255 + 0.5, 0)
    return scaled.astype(np.uint8)


def read_file_list(list_file: Path, root: Path) -> list[Path]:
    """The images named in `list_file` (one path a line, relative to `root` or absolute under it),
    in the file's order, each once, as paths relative to `root`.

    For folders too big or too slow to list (object-store mounts): nothing is checked on disk
    here; a listed file that is missing or unreadable is skipped and listed like a corrupt one.
    """
    list_file, root = Path(list_file), Path(root)
    if not list_file.is_file():
        raise TbhError(f"file list not found: {list_file}; pass a text file with one path a line.")
    absolute_root = root.resolve()
    found: dict[Path, None] = {}  # ordered set: a path listed twice is indexed once
    # file names are bytes: one that is not UTF-8 is read as Python lists it (surrogateescape)
    text = list_file.read_text(encoding="utf-8", errors="surrogateescape")
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        path = Path(name)
        if path.is_absolute():
            path = Path(os.path.normpath(path))
            if not path.is_relative_to(absolute_root):
                raise TbhError(
                    f"{list_file}:{number}: {name} is not under {root}; list paths relative to "
                    "the image folder, or absolute paths inside it."
                )
            path = path.relative_to(absolute_root)
        elif ".." in path.parts:
            raise TbhError(f"{list_file}:{number}: {name} leaves the image folder {root}.")
        found[path] = None
    return list(found)


def load_image(
    path: Path | BinaryIO,
    size: int,
    *,
    formats: tuple[str, ...] | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode one image (a file, or a binary stream) into RGB uint8 [3, size, size] (center crop
    to square + bilinear resize).

    For data from untrusted clients, `formats` limits the Pillow plugins tried (`UPLOAD_FORMATS`)
    and `max_pixels` refuses larger images from their header, before any pixel is decoded.
    Raises `ImageDecodeError` for files Pillow cannot fully decode, so callers can skip them.
    """
    try:
        with Image.open(path, formats=formats) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ImageDecodeError(
                    f"image {_name(path)} is {img.width} x {img.height} pixels, more than the "
                    f"{max_pixels:,} allowed."
                )
            img = to_rgb(ImageOps.exif_transpose(img))
            img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)  # (size, size, 3)
    except IMAGE_DECODE_ERRORS as exc:
        raise decode_error(path, exc) from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (3, size, size)


def _reason(exc: Exception) -> str:
    """Why Pillow refused a file, in words (its own message names a stream `<_io.BytesIO ...>`)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file tbh can read (such as JPEG, PNG, WebP, GIF, BMP, TIFF)."
    return str(exc)


def _name(source: Path | BinaryIO) -> str:
    """The path as given, or a stream's `name` (uploads carry the client's file name)."""
    if isinstance(source, str | os.PathLike):
        return str(source)  # the whole path: Path.name would drop its folders
    return str(getattr(source, "name", "<stream>"))


def label_of(relpath: Path) -> str | None:
    """The class of an image: its first folder under the root (`cat/x.jpg` -> "cat"), else None."""
    parts = Path(relpath).parts
    return parts[0] if len(parts) > 1 else None
