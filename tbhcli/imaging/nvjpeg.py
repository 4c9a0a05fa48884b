"""JPEG decoding on an NVIDIA GPU (nvJPEG through `torchvision.io.decode_jpeg`), for GPU workers.

Decoding, not inference, limits a GPU indexer fed by a few CPU cores. This path keeps the geometry
of `images.load_image` (RGB, centre crop to a square, bilinear resize with antialiasing) but not
its exact pixels: nvJPEG's IDCT and torch's resampler differ from libjpeg's and Pillow's by a few
levels, so a code bit whose logit is near 0 may flip (bench/gpu_check.sh measures how many).
Files nvJPEG should not take (not a baseline RGB/grey JPEG, an EXIF rotation, corrupt) go
through Pillow (`load_image`), which also names the undecodable ones.
"""

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from tbhcli.imaging.images import ImageDecodeError, load_image

_EXIF_ORIENTATION = 0x0112


def available() -> bool:
    """True where torch sees a CUDA GPU (torchvision's CUDA build then has nvJPEG)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


def _plain_jpeg(data: bytes) -> bool:
    """A JPEG that decodes to the same image with no EXIF rotation and no colour conversion."""
    try:
        with Image.open(io.BytesIO(data)) as img:  # parses the header only
            rotated = img.getexif().get(_EXIF_ORIENTATION, 1) != 1
            return img.format == "JPEG" and img.mode in ("RGB", "L") and not rotated
    except Exception:  # anything Pillow cannot even open is Pillow's to report
        return False


def _fit(image, size: int):
    """uint8 [3, H, W] -> uint8 [3, size, size]: centre crop to a square, antialiased resize.

    The crop starts on a whole pixel where Pillow's may start half-way: one more small difference.
    """
    import torch.nn.functional as F

    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[None, :, top : top + side, left : left + side].float()
    resized = F.interpolate(square, (size, size), mode="bilinear", antialias=True)
    return resized[0].round_().clamp_(0, 255).byte()


def decode_files(
    files: list[Path], size: int, device: str = "cuda"
) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Decode files into pixels uint8 [n_ok, 3, size, size] (in file order), the positions of the
    decoded files and (position, reason) of the failures; JPEGs on `device`, the rest by Pillow."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "use TorchCodec": not for nvJPEG
        from torchvision.io import ImageReadMode, decode_jpeg
    raw = [Path(f).read_bytes() if Path(f).is_file() else b"" for f in files]
    on_device = [i for i, data in enumerate(raw) if _plain_jpeg(data)]
    tensors = [torch.frombuffer(bytearray(raw[i]), dtype=torch.uint8) for i in on_device]
    decoded: dict[int, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:  # one batched call: what makes nvJPEG fast
            images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device) if tensors else []
        except RuntimeError:  # one bad file fails the batch: retry one by one, Pillow for the bad
            images = []
            for tensor in tensors:
                try:
                    images.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
    for i, image in zip(on_device, images, strict=True):
        if image is not None:
            decoded[i] = _fit(image, size).cpu().numpy()
    pixels, ok, errors = [], [], []
    for i, path in enumerate(files):
        try:
            pixels.append(decoded[i] if i in decoded else load_image(path, size))
            ok.append(i)
        except ImageDecodeError as exc:
            errors.append((i, exc.reason))
    stacked = np.stack(pixels) if pixels else np.zeros((0, 3, size, size), np.uint8)
    return stacked, ok, errors
