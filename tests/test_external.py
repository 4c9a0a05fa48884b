"""The user's own backbones (imaging/external.py): onnx:PATH, timm:NAME, clip:NAME, built from
randomly initialised models, compared with the same network run directly on normalised pixels."""

import hashlib
import re
import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tbhcli.errors import TbhError
from tbhcli.imaging.backbones import load_backbone, rebuild_backbone, recipe, weights_id
from tbhcli.imaging.external import parse_rgb, parse_spec
from tests.byo_models import (
    CLIP_MEAN,
    CLIP_STD,
    MEAN,
    STD,
    TIMM_NAME,
    normalise,
    write_clip_folder,
    write_onnx_extractor,
    write_timm_weights,
)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_normalisation(backbone, mean, std) -> None:
    np.testing.assert_allclose(backbone.normalisation["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(backbone.normalisation["std"], std, rtol=1e-6)


def _sha(path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("foo:bar", "unknown backbone kind 'foo'"),
        ("timm:", "has no NAME; write timm:NAME"),
        ("onnx:", "has no PATH"),
        ("onnx:missing.onnx", "ONNX backbone not found"),
        ("timm:no_such_net", "timm has no model 'no_such_net'"),
        ("clip:no-such-clip", "open_clip has no architecture"),
        ("alexnet", "onnx:PATH, timm:NAME, clip:NAME"),
    ],
)
def test_bad_specs_are_one_line_user_errors(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TbhError, match=message) as err:
        load_backbone(spec)
    assert "\n" not in str(err.value)


def test_onnx_paths_are_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(parse_spec("onnx:m.onnx")) == f"onnx:{tmp_path / 'm.onnx'}"
    assert parse_spec("tiny") is None and str(parse_spec("timm:resnet18")) == "timm:resnet18"
    assert parse_rgb("0.5, 0.4,0.3", "--mean") == (0.5, 0.4, 0.3)
    for bad in ("1,2", "a,b,c", "1,2,nan"):
        with pytest.raises(TbhError, match="--mean must be three numbers"):
            parse_rgb(bad, "--mean")
    with pytest.raises(TbhError, match="positive"):
        parse_rgb("0.2,0,0.2", "--std")


# ---- onnx:PATH ----------------------------------------------------------------------------------


@torch.no_grad()
def test_onnx_features_equal_the_torch_network(tmp_path):
    path = tmp_path / "extractor.onnx"
    net = write_onnx_extractor(path)
    backbone = load_backbone(f"onnx:{path}")
    assert (backbone.name, backbone.image_size, backbone.feature_dim) == (f"onnx:{path}", 32, 24)
    x = _images(5, 32)
    expected = net(normalise(x, MEAN, STD)).flatten(1)  # (5, 24): the 4-D output flattened
    torch.testing.assert_close(backbone(x), expected, atol=1e-5, rtol=1e-4)
    assert weights_id(backbone.name, None) == _sha(path)
    assert recipe(backbone, None)["backbone_weights_file"] == str(path)


@torch.no_grad()
def test_onnx_options_override_metadata_and_size_rules(tmp_path):
    static = tmp_path / "static.onnx"
    write_onnx_extractor(static, metadata={})
    with pytest.raises(TbhError, match="no tbh.mean metadata; pass --mean"):
        load_backbone(f"onnx:{static}")
    backbone = load_backbone(f"onnx:{static}", mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0))
    _assert_normalisation(backbone, (0.1, 0.2, 0.3), (1, 2, 3))
    with pytest.raises(TbhError, match="takes 32 px images, not --image-size 48"):
        load_backbone(f"onnx:{static}", image_size=48, mean=MEAN, std=STD)

    dynamic = tmp_path / "dynamic.onnx"
    net = write_onnx_extractor(dynamic, size=None)
    with pytest.raises(TbhError, match="dynamic input size.*--image-size"):
        load_backbone(f"onnx:{dynamic}")
    backbone = load_backbone(f"onnx:{dynamic}", image_size=48)
    assert backbone.image_size == 48
    x = _images(2, 48)
    torch.testing.assert_close(
        backbone(x), net(normalise(x, MEAN, STD)).flatten(1), atol=1e-5, rtol=1e-4
    )
    sized = tmp_path / "sized.onnx"
    write_onnx_extractor(sized, size=None, metadata={"tbh.image_size": "64", "tbh.mean": "0,0,0",
                                                     "tbh.std": "1,1,1"})  # fmt: skip
    assert load_backbone(f"onnx:{sized}").image_size == 64


@torch.no_grad()
def test_onnx_with_a_fixed_batch_of_one_runs_image_by_image(tmp_path):
    write_onnx_extractor(tmp_path / "one.onnx", batch=1)
    net = write_onnx_extractor(tmp_path / "any.onnx")  # the same weights, any batch
    x = _images(3, 32)
    one = load_backbone(f"onnx:{tmp_path / 'one.onnx'}")
    torch.testing.assert_close(one(x), load_backbone(f"onnx:{tmp_path / 'any.onnx'}")(x))
    torch.testing.assert_close(
        one(x), net(normalise(x, MEAN, STD)).flatten(1), atol=1e-5, rtol=1e-4
    )
    write_onnx_extractor(tmp_path / "four.onnx", batch=4)
    with pytest.raises(TbhError, match="takes batches of exactly 4"):
        load_backbone(f"onnx:{tmp_path / 'four.onnx'}")


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    write_timm_weights(tmp_path / "w.pt")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    monkeypatch.setitem(sys.modules, "open_clip", None)
    for spec in (f"timm:{TIMM_NAME}", "clip:ViT-B-32"):
        extra = re.escape("pip install 'tbhcli[backbones]'")
        with pytest.raises(TbhError, match=rf"needs the (timm|open_clip) package: {extra}"):
            load_backbone(spec, tmp_path / "w.pt")


def test_onnx_models_tbh_cannot_run_are_refused(tmp_path):
    flat = tmp_path / "flat.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(torch.nn.Linear(8, 4), (torch.rand(1, 8),), str(flat), dynamo=False)
    with pytest.raises(TbhError, match="one 4-D image input"):
        load_backbone(f"onnx:{flat}", mean=MEAN, std=STD)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(TbhError, match="cannot load .* as an ONNX model"):
        load_backbone(f"onnx:{tmp_path / 'junk.onnx'}")
    good = tmp_path / "good.onnx"
    write_onnx_extractor(good, metadata={"tbh.mean": "0.5,0.5", "tbh.std": "1,1,1"})
    with pytest.raises(TbhError, match="metadata tbh.mean of .* must be three numbers"):
        load_backbone(f"onnx:{good}")
    with pytest.raises(TbhError, match="holds its own weights"):
        load_backbone(f"onnx:{good}", weights=good)


# ---- timm:NAME ----------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("file, head", [("w.pt", 0), ("w.safetensors", 0), ("head.pt", 10)])
def test_timm_features_from_local_weights(tmp_path, file, head):
    reference = write_timm_weights(tmp_path / file, seed=1, num_classes=head)
    backbone = load_backbone(f"timm:{TIMM_NAME}", tmp_path / file)
    cfg = reference.pretrained_cfg
    assert backbone.image_size == cfg["input_size"][-1] and backbone.feature_dim == 256
    _assert_normalisation(backbone, cfg["mean"], cfg["std"])
    x = _images(2, 64)
    reference.reset_classifier(0)  # a checkpoint with its head: tbh keeps the pooled features
    expected = reference(normalise(x, cfg["mean"], cfg["std"]))
    torch.testing.assert_close(backbone(x), expected)
    assert weights_id(backbone.name, tmp_path / file) == _sha(tmp_path / file)


def test_timm_refuses_no_weights_and_weights_of_another_net(tmp_path):
    with pytest.raises(TbhError, match="needs its weights: pass --backbone-weights FILE"):
        load_backbone(f"timm:{TIMM_NAME}")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(TbhError, match="do not fit this backbone"):
        load_backbone(f"timm:{TIMM_NAME}", tmp_path / "other.pt")
    torch.save({"weight": [1, 2]}, tmp_path / "lists.pt")
    with pytest.raises(TbhError, match="state dict of tensors"):
        load_backbone(f"timm:{TIMM_NAME}", tmp_path / "lists.pt")


def test_weights_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(TbhError, match="cannot read weights file"):
        load_backbone(f"timm:{TIMM_NAME}", tmp_path / "evil.pt")


# ---- clip:NAME ----------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("visual_only", [False, True])
def test_clip_folder_image_tower(tmp_path, visual_only):
    visual = write_clip_folder(tmp_path / "clip", seed=2, visual_only=visual_only)
    backbone = load_backbone(f"clip:{tmp_path / 'clip'}")
    assert (backbone.image_size, backbone.feature_dim) == (32, 16)
    _assert_normalisation(backbone, CLIP_MEAN, CLIP_STD)
    x = _images(3, 32)
    torch.testing.assert_close(backbone(x), visual(normalise(x, CLIP_MEAN, CLIP_STD)))
    checkpoint = tmp_path / "clip" / "open_clip_pytorch_model.bin"
    assert weights_id(backbone.name, None) == _sha(checkpoint)


@torch.no_grad()
def test_clip_architecture_name_needs_weights(tmp_path):
    import json

    import open_clip

    visual = write_clip_folder(tmp_path / "clip", seed=3)
    config = json.loads((tmp_path / "clip" / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "tbh-test-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tbh-test-clip.json")  # as a built-in architecture
    with pytest.raises(TbhError, match="needs its weights"):
        load_backbone("clip:tbh-test-clip")
    weights = tmp_path / "clip" / "open_clip_pytorch_model.bin"
    backbone = load_backbone("clip:tbh-test-clip", weights)
    x = _images(2, 32)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    torch.testing.assert_close(backbone(x), visual(normalise(x, mean, std)))
    write_timm_weights(tmp_path / "timm.pt")
    with pytest.raises(TbhError, match="do not fit this backbone"):
        load_backbone("clip:tbh-test-clip", tmp_path / "timm.pt")


# ---- rebuilding what a run or model recorded ----------------------------------------------------


def test_rebuild_checks_the_recorded_weights(tmp_path):
    write_timm_weights(tmp_path / "a.pt", seed=1)
    write_timm_weights(tmp_path / "b.pt", seed=2)
    recorded = recipe(load_backbone(f"timm:{TIMM_NAME}", tmp_path / "a.pt"), tmp_path / "a.pt")
    assert rebuild_backbone(recorded).name == f"timm:{TIMM_NAME}"  # from the recorded file
    with pytest.raises(TbhError, match="holds other weights"):
        rebuild_backbone(recorded, tmp_path / "b.pt", "run r")
    (tmp_path / "a.pt").rename(tmp_path / "moved.pt")
    with pytest.raises(TbhError, match="which is gone; pass that file with --backbone-weights"):
        rebuild_backbone(recorded, what="run r")
    assert rebuild_backbone(recorded, tmp_path / "moved.pt").feature_dim == 256

    write_onnx_extractor(tmp_path / "x.onnx")
    recorded = recipe(load_backbone(f"onnx:{tmp_path / 'x.onnx'}"), None)
    (tmp_path / "x.onnx").rename(tmp_path / "y.onnx")
    with pytest.raises(TbhError, match="ONNX backbone .* which is gone"):
        rebuild_backbone(recorded, what="model m")
    assert rebuild_backbone(recorded, tmp_path / "y.onnx").name == f"onnx:{tmp_path / 'y.onnx'}"


def test_onnx_session_runs_on_cpu(tmp_path):
    write_onnx_extractor(tmp_path / "x.onnx")
    body = load_backbone(f"onnx:{tmp_path / 'x.onnx'}").body
    assert isinstance(body.session, ort.InferenceSession)
    assert body.session.get_providers() == ["CPUExecutionProvider"]
    assert np.dtype(body.input_dtype) == np.float32
