"""A features model (`tbh export --input features`) on images: the backbone its metadata names
(`tbh.backbone*`: spec, weights sha256 and file, mean, std, image size) turns decoded pixels
into features, then the model turns features into codes.

`image_session` gives an object that runs like an onnxruntime session on uint8 images, so
`tbh index` and `tbh query` take either kind of model. The backbone is rebuilt with
`imaging.backbones.rebuild_backbone`, which refuses weights other than the recorded ones.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tbhcli.deploy.runtime import ModelInfo, create_session
from tbhcli.errors import TbhError


class BackboneSession:
    """uint8 images [B, 3, S, S] -> backbone (torch or onnxruntime) -> features model -> codes."""

    def __init__(self, backbone, session, device: str):
        from tbhcli.device import torch_device

        self.device = torch_device(device)
        self.backbone = backbone.to(self.device).eval()
        self.session = session
        self.features_input = session.get_inputs()[0].name

    def get_inputs(self) -> list:
        return [SimpleNamespace(name="images", shape=["batch", 3, "S", "S"])]

    def run(self, output_names, feeds: dict) -> list[np.ndarray]:
        import torch  # only a features model needs it: an images model runs without torch

        pixels = torch.from_numpy(next(iter(feeds.values()))).to(self.device)
        with torch.no_grad():
            features = self.backbone(pixels.float().div_(255)).float().cpu().numpy()  # (B, D)
        return self.session.run(output_names, {self.features_input: features})


def check_runs_on_images(info: ModelInfo) -> ModelInfo:
    """`info`, if its model encodes images: an images model, or a features model that records
    the backbone that made its features."""
    if info.input == "features" and (info.recipe is None or not info.image_size):
        raise TbhError(
            f"{info.path} takes features and records no backbone to make them from images; "
            "export the run with `tbh export` (--input images) and pass that file as --model."
        )
    return info


def image_session(
    info: ModelInfo, device: str = "auto", backbone_weights: Path | None = None
) -> tuple[object, str]:
    """A session that encodes uint8 images with the model `info` describes, and its provider.

    For a features model, `backbone_weights` replaces the recorded weights file (or ONNX file).
    """
    check_runs_on_images(info)
    session, provider = create_session(info.path, device, info)
    if info.input == "images":
        if backbone_weights is not None:
            raise TbhError(
                f"{info.path} holds its backbone; --backbone-weights is for features models."
            )
        return session, provider
    from tbhcli.imaging.backbones import rebuild_backbone

    backbone = rebuild_backbone(info.recipe, backbone_weights, f"features model {info.path}")
    if backbone.feature_dim != info.feature_dim:
        raise TbhError(
            f"backbone {backbone.name} gives {backbone.feature_dim}-d features but {info.path} "
            f"takes {info.feature_dim}-d ones."
        )
    return BackboneSession(backbone, session, device), provider
