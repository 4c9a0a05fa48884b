"""`tbh features`: embed an image folder into a feature set `NAME.npy` (+ labels, + meta).

Images are decoded in parallel by the decoding pool that `tbh index` uses too
(`imaging.decode.decode_batches`), embedded by the backbone in batches (on the `--device` policy
of `tbhcli.device`), and written with `featureset.save_features`.
Class subfolders give int labels: sorted folder names -> 0..C-1, kept in the meta as `classes`.
Files that cannot be decoded are skipped and counted, never fatal.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import tbhcli
from tbhcli.device import torch_device
from tbhcli.errors import TbhError
from tbhcli.imaging.backbones import load_backbone, weights_id
from tbhcli.imaging.encode import encode_files
from tbhcli.imaging.external import weights_file
from tbhcli.imaging.featureset import labels_path, load_meta, save_features, save_meta
from tbhcli.imaging.images import (
    check_workers,
    default_workers,
    label_of,
    list_images,
)
from tbhcli.imaging.recipe import BackboneRecipe
from tbhcli.jsondoc import document
from tbhcli.terminal import ProgressCallback, no_progress, shown
from tbhcli.workspace import Artefact

log = logging.getLogger(__name__)


def class_labels(paths: list[Path]) -> tuple[np.ndarray | None, list[str]]:
    """Int labels [N] from class folders (sorted names -> 0..C-1); None if a file is at the root."""
    names = [label_of(p) for p in paths]
    if not names or any(n is None for n in names):
        return None, []
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[n] for n in names], dtype=np.int64), classes


@torch.no_grad()
def embed_images(
    root: Path,
    paths: list[Path],
    backbone: torch.nn.Module,
    image_size: int,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 [N, D] for `root / paths` and a bool mask [N] of decodable images.

    Rows of undecodable images are zero and False in the mask.
    """
    dev = torch_device(device)
    backbone = backbone.to(dev).eval()
    workers = default_workers() if workers is None else workers
    features = np.zeros((len(paths), backbone.feature_dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    files = [root / p for p in paths]

    def embed(pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(pixels).to(dev).float().div_(255)  # (B, 3, S, S)
        return backbone(x).float().cpu().numpy()  # (B, D)

    progress = progress or no_progress
    progress("embedding", 0, len(paths))
    for batch in encode_files(files, embed, image_size, batch_size, workers):
        if batch.ok:
            features[batch.ok] = batch.outputs
            ok[batch.ok] = True
        progress("embedding", batch.end, len(paths))
    return features, ok


def decoded_paths(root: Path, paths: list[Path], ok: np.ndarray) -> list[Path]:
    """The `paths` that decoded (mask `ok` of `embed_images`); the others are named on stderr.

    None decoded is an error: there is nothing to embed.
    """
    bad = [p for p, good in zip(paths, ok, strict=True) if not good]
    if len(bad) == len(paths):
        raise TbhError(f"none of the {len(paths)} images in {root} could be decoded.")
    if bad:
        names = ", ".join(shown(p) for p in bad[:3]) + (", ..." if len(bad) > 3 else "")
        log.warning("skipped %d undecodable image(s): %s", len(bad), names)
    return [p for p, good in zip(paths, ok, strict=True) if good]


def features(
    images: Path,
    out: Path,
    backbone: str = "efficientnet-lite0",
    backbone_weights: Path | None = None,
    image_size: int | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    progress: ProgressCallback | None = None,
) -> "FeaturesReport":
    """Embed every image under `images` into `out` (NAME.npy, NAME.labels.npy, NAME.meta.json).

    `image_size` defaults to the backbone's own input side, `mean` / `std` (R, G, B, applied to
    [0, 1] pixels) to its own normalisation; all three are recorded in the meta, so `tbh train`
    and `tbh export` rebuild the same backbone. `progress(label, done, total)` is called as images
    are embedded (`tbhcli.terminal.ProgressCallback`). Returns what was written
    (`FeaturesReport`: also the path of NAME.npy).
    """
    images, out = Path(images), Path(out)
    if out.suffix != ".npy":
        raise TbhError(f"output must be a .npy file (got {out}); try -o {out.with_suffix('.npy')}.")
    if batch_size <= 0:
        raise TbhError(f"--batch-size must be positive (got {batch_size}).")
    workers = check_workers(workers)
    paths = list_images(images)
    if not paths:
        raise TbhError(f"no images found in {images} (looked for jpg, png, bmp, gif, webp, tiff).")
    if image_size is not None and image_size < 32:
        raise TbhError(f"--image-size must be at least 32 pixels (got {image_size}).")
    model = load_backbone(backbone, backbone_weights, image_size, mean, std)
    size = model.image_size

    feats, ok = embed_images(images, paths, model, size, batch_size, workers, device, progress)
    labels, classes = class_labels(paths)  # from all files, so a bad file never renumbers classes
    kept = decoded_paths(images, paths, ok)
    save_features(out, feats[ok], labels[ok] if labels is not None else None)
    # the file the weights came from, also when it was the backbone's own (a clip:FOLDER's)
    file = backbone_weights if backbone_weights is not None else weights_file(model.name)
    save_meta(
        out,
        {
            **BackboneRecipe(
                model.name,
                weights_id(model.name, backbone_weights),
                str(Path(file).resolve()) if file is not None else None,
                model.normalisation["mean"],
                model.normalisation["std"],
                size,
            ).to_meta(),
            "classes": classes,
            "images": str(images.resolve()),
            "paths": [p.as_posix() for p in kept],
            "skipped": [p.as_posix() for p, good in zip(paths, ok, strict=True) if not good],
            "n": len(kept),
            "dim": model.feature_dim,
            "tbh_version": tbhcli.__version__,
        },
    )
    shape = f"{len(kept)} x {model.feature_dim}"
    log.info(f"wrote {shown(out)}: {shape} ({model.name}, {size} px)")
    return FeaturesReport(out, features_summary(out))


@dataclass
class FeaturesReport(Artefact):
    """What `features` wrote: NAME.npy (the report is also that path) and its summary."""

    path: Path
    summary: dict  # `features_summary`: labels file, n, dim, backbone, image size, classes, ...

    def to_json(self) -> str:
        """The `tbh.features/1` document."""
        return document("features", self.summary)


def features_summary(path: Path) -> dict:
    """What `features` wrote to `path` (the body of the `tbh.features/1` document)."""
    meta = load_meta(path)
    labels = labels_path(Path(path))
    return {
        "features": Path(path),
        "labels": labels if labels.exists() else None,
        "n": meta["n"],
        "dim": meta["dim"],
        "backbone": meta["backbone"],
        "image_size": meta["image_size"],
        "weights": meta["weights"],
        "classes": meta["classes"],
        "skipped": meta["skipped"],
    }
