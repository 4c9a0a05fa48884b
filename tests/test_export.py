import json
import os
from dataclasses import asdict

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import onnx
import tbhcli
from tbhcli.cli import app
from tbhcli.deploy.export import build_hasher, config_sha256, export, verify
from tbhcli.deploy.runtime import create_session, model_info, run_codes
from tbhcli.errors import TbhError
from tbhcli.hashing.baselines import LinearHash
from tbhcli.hashing.runs import load_run, save_run
from tbhcli.hashing.tbh import SignEncoder, TBHConfig
from tbhcli.imaging.images import load_image
from tbhcli.workspace import file_sha256
from tests.byo_models import (
    MEAN,
    STD,
    TIMM_NAME,
    bit_differences,
    byo_run,
    reference_codes,
    write_onnx_extractor,
    write_timm_weights,
)
from tests.tiny_workspace import FEATURE_DIM, IMAGE_SIZE, make_lsh_run, reference_features


def _ort_codes(model, batch: np.ndarray) -> np.ndarray:
    session, provider = create_session(model, device="cpu")
    assert provider == "CPUExecutionProvider"
    return run_codes(session, batch)


def test_image_model_equals_torch_pipeline_on_any_batch_size(tmp_path):
    run = make_lsh_run(tmp_path / "runs" / "lsh32")
    model = export(run, out=tmp_path / "m.onnx")
    g = torch.Generator().manual_seed(1)
    for n in (1, 5, 33):  # the batch axis is dynamic
        images = torch.randint(
            0, 256, (n, 3, IMAGE_SIZE, IMAGE_SIZE), generator=g, dtype=torch.uint8
        )
        expected = load_run(run).encode(reference_features(images.float() / 255).numpy())
        got = _ort_codes(model, images.numpy())
        assert got.dtype == np.uint8 and got.shape == (n, 4)
        np.testing.assert_array_equal(got, expected)


def test_metadata_describes_the_model(tmp_path):
    run = make_lsh_run(tmp_path / "r", bits=16)
    model = export(run, out=tmp_path / "m.onnx")
    info = model_info(model)
    assert (info.bits, info.input, info.image_size) == (16, "images", IMAGE_SIZE)
    assert (info.backbone, info.method, info.version) == ("tiny", "lsh", tbhcli.__version__)
    assert info.config_sha256 == config_sha256(load_run(run).config)
    graph = onnx.load(str(model)).graph
    assert graph.input[0].name == "images"
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_default_path_is_onnx_run_name_in_the_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_lsh_run(tmp_path / "runs" / "older")
    make_lsh_run(tmp_path / "runs" / "newest")
    assert export().path == tbhcli.workspace.MODELS_DIR / "newest.onnx"
    assert export(input="features").name == "newest.features.onnx"
    assert not list((tmp_path / "onnx").glob("*.tmp"))


def test_features_model_equals_run_encode(tmp_path):
    run = make_lsh_run(tmp_path / "r")
    model = export(run, out=tmp_path / "f.onnx", input="features")
    assert model_info(model).input == "features"
    x = np.random.default_rng(0).standard_normal((20, FEATURE_DIM)).astype(np.float32)
    np.testing.assert_array_equal(_ort_codes(model, x), load_run(run).encode(x))


def test_tbh_sign_encoder_exports(tmp_path):
    cfg = TBHConfig(feature_dim=FEATURE_DIM, bits=24, hidden_dim=48, continuous_dim=8)
    torch.manual_seed(0)
    config = {
        "method": "tbh",
        "bits": 24,
        "feature_dim": FEATURE_DIM,
        "backbone": "tiny",
        "image_size": IMAGE_SIZE,
        "model": asdict(cfg),
    }
    save_run(tmp_path / "tbh", config, SignEncoder(cfg))
    model = export(tmp_path / "tbh", out=tmp_path / "t.onnx")
    images = np.random.default_rng(3).integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    expected = load_run(tmp_path / "tbh").encode(
        reference_features(torch.from_numpy(images).float() / 255).numpy()
    )
    np.testing.assert_array_equal(_ort_codes(model, images), expected)


def test_run_without_backbone_exports_only_features(tmp_path):
    config = {"method": "lsh", "bits": 8, "feature_dim": 5, "backbone": None, "image_size": None}
    save_run(tmp_path / "r", config, LinearHash(5, 8))
    with pytest.raises(TbhError, match="--input features"):
        export(tmp_path / "r", out=tmp_path / "m.onnx")
    assert export(tmp_path / "r", out=tmp_path / "m.onnx", input="features").is_file()


def test_verification_fails_when_onnx_disagrees_with_torch(tmp_path):
    run = make_lsh_run(tmp_path / "r")
    model = export(run, out=tmp_path / "m.onnx")
    other = load_run(run)
    other.encoder.projection.mul_(-1)  # every confident bit flips
    batch = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(TbhError, match="disagrees with torch"):
        verify(model, build_hasher(other, "images"), batch)
    report = verify(model, build_hasher(load_run(run), "images"), batch)
    assert report.bits_compared == 4 * 32 and report.mismatched_bits == 0


def test_unknown_input_is_a_user_error(tmp_path):
    with pytest.raises(TbhError, match="--input"):
        export(make_lsh_run(tmp_path / "r"), input="pixels")


def test_corrupt_run_files_are_user_errors(tmp_path):
    run = make_lsh_run(tmp_path / "r", bits=8)
    (run / "encoder.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TbhError, match="cannot load the weights"):
        export(run)
    (run / "config.json").write_text("{not json")
    with pytest.raises(TbhError, match="cannot read"):
        export(run)


def test_cli_export_prints_the_verification(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_lsh_run(tmp_path / "runs" / "r8", bits=8)
    result = CliRunner().invoke(app, ["export"])
    assert result.exit_code == 0, result.output
    assert "onnx/r8.onnx" in result.output and "mismatch rate" in result.output
    assert (tmp_path / "onnx" / "r8.onnx").is_file()
    missing = CliRunner().invoke(app, ["export", "runs/nope"])
    assert missing.exit_code == 1 and "not a tbh run" in missing.output


@pytest.mark.parametrize("opset, message", [(5, "at least"), (99, "not supported")])
def test_unusable_opset_is_a_user_error(tmp_path, opset, message):
    run = make_lsh_run(tmp_path / "runs" / "lsh")
    with pytest.raises(TbhError, match=message):
        export(run, out=tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()


# ---- backbones the user brings (imaging/external.py) --------------------------------------------


@pytest.mark.parametrize("opset", [17, 13])  # the user's graph's opset is the export's
def test_onnx_backbone_is_merged_into_one_images_graph(tmp_path, opset):
    extractor = tmp_path / "extractor.onnx"
    net = write_onnx_extractor(extractor, opset=opset)
    run = byo_run(tmp_path, f"onnx:{extractor}")
    model = export(run, out=tmp_path / "m.onnx")
    info = model_info(model)
    assert (info.input, info.image_size, info.feature_dim) == ("images", 32, 24)
    assert info.backbone == f"onnx:{extractor}"
    assert info.recipe.weights == "sha256:" + file_sha256(extractor)
    proto = onnx.load(str(model))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [opset]
    files = sorted((tmp_path / "images").rglob("*.png"))
    pixels = np.stack([load_image(f, 32) for f in files])
    got = _ort_codes(model, pixels)
    expected = reference_codes(run, files, net, MEAN, STD)
    assert bit_differences(got, expected).max() <= 1  # only bits whose logit is ~0 may flip


def test_moved_onnx_backbone_is_named_and_can_be_passed(tmp_path):
    extractor = tmp_path / "extractor.onnx"
    write_onnx_extractor(extractor)
    run = byo_run(tmp_path, f"onnx:{extractor}")
    moved = extractor.rename(tmp_path / "moved.onnx")
    with pytest.raises(TbhError, match="which is gone; pass that file with --backbone-weights"):
        export(run, out=tmp_path / "m.onnx")
    assert model_info(export(run, tmp_path / "m.onnx", "images", moved)).backbone == f"onnx:{moved}"
    write_onnx_extractor(tmp_path / "other.onnx", seed=5)
    with pytest.raises(TbhError, match="holds other weights"):
        export(run, tmp_path / "m.onnx", "images", tmp_path / "other.onnx")


def test_onnx_backbone_with_a_fixed_batch_exports_features_models_only(tmp_path):
    write_onnx_extractor(tmp_path / "one.onnx", batch=1)
    run = byo_run(tmp_path, f"onnx:{tmp_path / 'one.onnx'}")
    with pytest.raises(TbhError, match="fixed batch axis.*--input features"):
        export(run, out=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx.tmp").exists()
    assert model_info(export(run, tmp_path / "f.onnx", "features")).image_size == 32


def test_timm_backbone_exports_from_its_recorded_weights(tmp_path):
    net = write_timm_weights(tmp_path / "timm.safetensors", seed=4)
    run = byo_run(tmp_path, f"timm:{TIMM_NAME}", tmp_path / "timm.safetensors")
    model = export(run, out=tmp_path / "m.onnx")  # no --backbone-weights: the run records them
    info = model_info(model)
    assert (info.backbone, info.image_size, info.feature_dim) == (f"timm:{TIMM_NAME}", 160, 256)
    assert info.recipe.weights_file == str(tmp_path / "timm.safetensors")
    files = sorted((tmp_path / "images").rglob("*.png"))[:4]
    got = _ort_codes(model, np.stack([load_image(f, 160) for f in files]))
    cfg = net.pretrained_cfg
    expected = reference_codes(run, files, net, cfg["mean"], cfg["std"])
    assert bit_differences(got, expected).max() <= 1


def test_export_returns_the_model_with_its_report_and_logs_its_line(tmp_path, caplog):
    import logging

    run = make_lsh_run(tmp_path / "r", bits=16)
    with caplog.at_level(logging.INFO, logger="tbhcli"):
        model = export(run, out=tmp_path / "m.onnx")
    assert [r.getMessage() for r in caplog.records] == [model.summary_line()]
    assert "onnxruntime = torch on 16 items, 0/256 bits differ" in model.summary_line()
    assert os.fspath(model) == str(tmp_path / "m.onnx") and model.name == "m.onnx"
    document = json.loads(model.to_json())
    assert document["schema"] == "tbh.export/1" and document["bits"] == 16
    assert document["sha256"] == model_info(model).sha256 and document["run"] == str(run)
