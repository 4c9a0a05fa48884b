import hashlib
from urllib.error import URLError

import pytest
import torch
import torchvision
from torchvision.models._api import WeightsEnum

from tbhcli.errors import TbhError
from tbhcli.imaging.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    list_backbones,
    load_backbone,
    weights_id,
)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def test_tiny_is_deterministic_and_normalises_inside():
    a, b = load_backbone("tiny"), load_backbone("tiny")
    assert (a.name, a.image_size, a.feature_dim) == ("tiny", 32, 32)
    x = _images(3, 32)
    out = a(x)
    assert out.shape == (3, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, b(x), rtol=0, atol=0)
    torch.testing.assert_close(out, a.body(_normalise(x)))
    assert not torch.allclose(out, a.body(x))


@pytest.mark.slow
@torch.no_grad()
def test_efficientnet_lite0_features_are_pooled_relu6():
    net = load_backbone("efficientnet-lite0")
    assert (net.image_size, net.feature_dim) == (224, 1280)
    x = _images(2, 64)
    out = net(x)
    assert out.shape == (2, 1280)
    assert (out >= 0).all() and (out <= 6).all() and out.std() > 0
    # Reference: the package's own trunk on normalised pixels, averaged over space.
    trunk = net.body.net.extract_features(_normalise(x))  # (2, 1280, 2, 2)
    torch.testing.assert_close(out, trunk.mean(dim=(2, 3)))


def test_unknown_backbone_lists_choices():
    with pytest.raises(TbhError, match="efficientnet-lite0"):
        load_backbone("alexnet")
    expected = {"efficientnet-lite0", "resnet50", "vgg16-fc7", "gray32", "tiny"}
    assert set(list_backbones()) == expected


@torch.no_grad()
def test_weights_file_round_trip_and_sha256(tmp_path):
    tiny = load_backbone("tiny")
    for p in tiny.parameters():
        p.add_(1.0)
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    loaded = load_backbone("tiny", weights=path)
    x = _images(2, 32)
    torch.testing.assert_close(loaded(x), tiny(x))
    assert not torch.allclose(loaded(x), load_backbone("tiny")(x))
    assert weights_id("tiny", path) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights_id("resnet50", None) == "imagenet"


def test_bad_weights_files_are_user_errors(tmp_path):
    with pytest.raises(TbhError, match="not found"):
        load_backbone("tiny", weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(TbhError, match="cannot read"):
        load_backbone("tiny", weights=tmp_path / "junk.pt")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(TbhError, match="do not fit"):
        load_backbone("tiny", weights=tmp_path / "other.pt")


@pytest.mark.slow
@torch.no_grad()
def test_resnet50_from_local_weights(tmp_path):
    reference = torchvision.models.resnet50().eval()
    path = tmp_path / "resnet50.pt"
    torch.save(reference.state_dict(), path)
    net = load_backbone("resnet50", weights=path)
    assert net.feature_dim == 2048
    x = _images(2, 32)
    out = net(x)
    assert out.shape == (2, 2048)
    reference.fc = torch.nn.Identity()
    torch.testing.assert_close(out, reference(_normalise(x)))


@pytest.mark.slow
@torch.no_grad()
def test_vgg16_fc7_download_path(monkeypatch):
    reference = torchvision.models.vgg16().eval()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, **kw: reference.state_dict())
    net = load_backbone("vgg16-fc7")
    x = _images(2, 32)
    out = net(x)
    assert out.shape == (2, 4096) and (out >= 0).all()
    fc6, fc7 = reference.classifier[0], reference.classifier[3]
    pooled = torch.flatten(reference.avgpool(reference.features(_normalise(x))), 1)  # (2, 25088)
    expected = torch.relu(fc7(torch.relu(fc6(pooled))))  # fc7 after ReLU, as in the paper
    torch.testing.assert_close(out, expected)


def test_offline_download_is_a_user_error(monkeypatch):
    def offline(self, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(TbhError, match="--backbone-weights FILE"):
        load_backbone("resnet50")


@pytest.mark.slow
def test_efficientnet_lite0_exports_to_onnx_with_dynamic_batch(tmp_path):
    import numpy as np
    import onnxruntime as ort

    net = load_backbone("efficientnet-lite0")
    path = tmp_path / "backbone.onnx"
    torch.onnx.export(
        net,
        (_images(1, 64),),
        path,
        dynamo=False,
        opset_version=17,
        input_names=["images"],
        output_names=["features"],
        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _images(3, 64, seed=1)
    (out,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)
