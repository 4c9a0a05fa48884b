"""Bring-your-own backbones for tests, randomly initialised and written where a user keeps them:
an ONNX feature extractor exported from a tiny torch CNN, a timm state dict, an open_clip folder.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import onnx

TIMM_NAME = "test_efficientnet"  # timm's own ~100k-parameter test network (160 px, 256-d)
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
# a tiny ViT image tower (and text tower: open_clip builds both) for clip:FOLDER
CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 1, "layers": 1},
}
CLIP_MEAN, CLIP_STD = [0.45, 0.45, 0.4], [0.27, 0.26, 0.28]
# With a text tower that open_clip's built-in tokenizer can feed (its 49,408-token vocabulary).
CLIP_TEXT_CONFIG = CLIP_CONFIG | {
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}
}


def extractor(seed: int = 0) -> nn.Module:
    """A small random CNN: normalised pixels [B, 3, S, S] -> features [B, 24, 1, 1] (4-D on
    purpose: tbh flattens an ONNX backbone's output)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 24, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
    ).eval()


def write_onnx_extractor(
    path: Path,
    size: int | None = 32,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
    opset: int = 17,
    batch: int | None = None,
) -> nn.Module:
    """Export `extractor(seed)` to `path` (static `size` px, or dynamic H, W when None) with
    `metadata` as metadata_props (default: tbh.mean / tbh.std of MEAN, STD), a dynamic batch axis
    unless `batch` fixes it; return the module."""
    net = extractor(seed)
    dynamic = {} if batch else {0: "batch"}
    dynamic |= {} if size else {2: "h", 3: "w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        _export(net, size, path, dynamic, opset, batch or 2)
    model = onnx.load(str(path))
    if metadata is None:
        metadata = {"tbh.mean": ",".join(map(str, MEAN)), "tbh.std": ",".join(map(str, STD))}
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return net


def _export(net: nn.Module, size, path: Path, dynamic: dict, opset: int, batch: int) -> None:
    torch.onnx.export(
        net,
        (torch.rand(batch, 3, size or 40, size or 40),),
        str(path),
        dynamo=False,
        input_names=["pixel_values"],
        output_names=["embedding"],
        dynamic_axes={"pixel_values": dynamic, "embedding": {0: "batch"} if 0 in dynamic else {}},
        opset_version=opset,
    )


def timm_model(seed: int = 0, num_classes: int = 0) -> nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(TIMM_NAME, pretrained=False, num_classes=num_classes).eval()


def write_timm_weights(path: Path, seed: int = 0, num_classes: int = 0) -> nn.Module:
    """A random `TIMM_NAME` state dict (with a classifier head when `num_classes`)."""
    model = timm_model(seed, num_classes)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)
    return model


def write_clip_folder(
    folder: Path, seed: int = 0, visual_only: bool = False, config: dict = CLIP_CONFIG
) -> nn.Module:
    """An open_clip folder as Hugging Face holds one: open_clip_config.json + a checkpoint of a
    random tiny CLIP (or of its image tower only); returns the image tower."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**config).eval()
    config = {"model_cfg": config, "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    state = model.visual.state_dict() if visual_only else model.state_dict()
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    return model.visual


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def byo_run(root: Path, backbone: str, weights: Path | None = None, **options) -> Path:
    """`tbh features` on 12 tiny PNGs (root/images) with `backbone`, then a 16-bit LSH run on
    them (root/runs/byo): what a user has before `tbh export`. Returns the run folder."""
    from tbhcli.imaging.embed import features
    from tbhcli.training.fit import train
    from tests.tiny_workspace import make_images

    make_images(root / "images", {"a": 6, "b": 6})
    out = features(root / "images", root / "f.npy", backbone, weights, workers=0, **options)
    return train(out, bits=16, method="lsh", out=root / "runs" / "byo", quiet=True, device="cpu")


def reference_codes(run: Path, files: list[Path], net: nn.Module, mean, std) -> np.ndarray:
    """The slow obvious pipeline: decode each file, `net` on normalised pixels in torch, flatten,
    `Run.encode`."""
    from tbhcli.hashing.runs import load_run
    from tbhcli.imaging.images import load_image

    size = load_run(run).config["image_size"]
    pixels = torch.from_numpy(np.stack([load_image(f, size) for f in files])).float() / 255
    with torch.no_grad():
        features = net(normalise(pixels, mean, std)).flatten(1).numpy()
    return load_run(run).encode(features)


def bit_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Differing bits per row of two packed code arrays [N, bits / 8]."""
    return (np.unpackbits(a, axis=1) != np.unpackbits(b, axis=1)).sum(axis=1)


def build_clip_text_workspace(ws: Path) -> tuple[Path, Path]:
    """In `ws` (made the current folder meanwhile): a tiny whole CLIP in clip/, 30 images, their
    features, an ITQ-16 run on them, its images and text models (onnx/), and codes.zarr: a
    workspace where text queries work. Returns (run, images model)."""
    import os

    from tbhcli.deploy.export import export
    from tbhcli.imaging.embed import features
    from tbhcli.indexing.index import index
    from tbhcli.training.fit import train
    from tests.tiny_workspace import make_images

    here = Path.cwd()
    os.chdir(ws)
    try:
        write_clip_folder(ws / "clip", seed=4, config=CLIP_TEXT_CONFIG)
        make_images(ws / "images", {"a": 15, "b": 15})
        features("images", "f.npy", f"clip:{ws / 'clip'}", workers=0)
        run = train("f.npy", bits=16, method="itq", out=ws / "runs" / "clip16", quiet=True)
        model = export(run)
        index("images", workers=0, device="cpu")
    finally:
        os.chdir(here)
    return run, ws / model
