"""`tbhcli.encode`: images, pixels or features -> packed codes with an exported model.

The Python face of what `tbh index` and `tbh query` do to each image, for a notebook: files or
folders are decoded and encoded as `tbh query` does (apps/query.py), in-memory arrays go
straight to the model, uint8 pixels [N, 3, S, S] to an images model (or a features model
through its recorded backbone) and float32 features [N, D] to a features model.
"""

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tbhcli.apps.query import encode_images, expand_images
from tbhcli.deploy.features_model import image_session
from tbhcli.deploy.runtime import create_session, model_info, run_codes
from tbhcli.errors import TbhError
from tbhcli.terminal import shown
from tbhcli.workspace import as_paths, resolve_model


def encode(
    images: str | os.PathLike | Iterable | np.ndarray,
    model: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> np.ndarray:
    """Packed codes uint8 [N, bits/8] of `images`, one row per image in order.

    `images`: a path or a list of paths (image files, or folders expanded to their images in
    sorted order), or an array: uint8 pixels [N, 3, S, S] or float32 features [N, D] (a
    features model). `model`: an exported ONNX file (default: the newest in onnx/). A file that
    cannot be decoded is an error here: every row must be the image asked for.

    >>> import numpy as np, tempfile, tbhcli
    >>> folder = Path(tempfile.mkdtemp())
    >>> np.save(folder / "db.npy", np.random.default_rng(0).random((300, 16), dtype=np.float32))
    >>> run = tbhcli.train(folder / "db.npy", bits=16, method="lsh", out=folder / "run")
    >>> model = tbhcli.export(run, folder / "lsh.features.onnx", input="features")
    >>> codes = tbhcli.encode(np.ones((2, 16), np.float32), model, device="cpu")
    >>> codes.dtype, codes.shape
    (dtype('uint8'), (2, 2))
    """
    if batch_size < 1:
        raise TbhError(f"batch_size must be at least 1 (got {batch_size}).")
    info = model_info(resolve_model(model))
    if not isinstance(images, np.ndarray):
        files = expand_images(as_paths(images))
        codes, kept = encode_images(files, info.path, device, batch_size, 0, info)
        if len(kept) < len(files):
            failed = [shown(f) for f in files if f not in set(kept)]
            raise TbhError(f"could not decode {', '.join(failed[:3])}; pass images that decode.")
        return codes
    if images.ndim == 4:
        want = (3, info.image_size, info.image_size)
        if images.dtype != np.uint8 or images.shape[1:] != want:
            raise TbhError(
                f"pixels must be uint8 [N, {', '.join(map(str, want))}] for {info.path} "
                f"(got {images.dtype} {list(images.shape)})."
            )
        session, _ = image_session(info, device)
    elif images.ndim == 2 and info.input == "features":
        if images.shape[1] != info.feature_dim:
            raise TbhError(
                f"{info.path} takes {info.feature_dim}-d features (got {images.shape[1]}-d)."
            )
        images = np.ascontiguousarray(images, np.float32)
        session, _ = create_session(info.path, device, info)
    else:
        raise TbhError(
            f"{info.path} takes {info.input}; pass uint8 pixels [N, 3, S, S]"
            + (" or float32 features [N, D]" if info.input == "features" else "")
            + f", or image paths (got an array of shape {list(images.shape)})."
        )
    if not len(images):
        return np.zeros((0, info.bits // 8), np.uint8)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    return np.concatenate([run_codes(session, batch) for batch in batches])
