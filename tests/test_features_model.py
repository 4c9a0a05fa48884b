"""deploy/features_model.py: a features model (`tbh export --input features`) indexes and queries
images through the backbone its metadata records, as the CLI runs it."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tbhcli.apps.serve.service import SearchService, Upload
from tbhcli.cli import app
from tbhcli.deploy.export import export
from tbhcli.deploy.features_model import image_session
from tbhcli.deploy.runtime import model_info
from tbhcli.errors import TbhError
from tbhcli.storage.store import open_store
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
from tests.tiny_workspace import make_images

runner = CliRunner()


def _tbh(*args: str) -> str:
    result = runner.invoke(app, [*map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout


def _fails(*args: str) -> str:
    result = runner.invoke(app, [*map(str, args)])
    assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
    return " ".join(result.output.split())  # rich wraps the line at the terminal's width


def test_timm_features_model_indexes_and_queries_images(tmp_path):
    net = write_timm_weights(tmp_path / "timm.pt", seed=6)
    run = byo_run(tmp_path, f"timm:{TIMM_NAME}", tmp_path / "timm.pt")
    model = tmp_path / "onnx" / "f.onnx"  # beside the store: where query finds it
    _tbh("export", run, "--input", "features", "-o", model)
    info = model_info(model)
    assert (info.input, info.backbone, info.image_size) == ("features", f"timm:{TIMM_NAME}", 160)
    store = tmp_path / "codes.zarr"
    _tbh("index", tmp_path / "images", "--store", store, "--model", model, "--workers", "0")
    db = open_store(store)
    files = [tmp_path / "images" / p for p in db.paths.tolist()]
    cfg = net.pretrained_cfg
    expected = reference_codes(run, files, net, cfg["mean"], cfg["std"])
    assert bit_differences(db.read_codes(), expected).max() <= 1
    assert db.attrs["backbone"] == f"timm:{TIMM_NAME}"

    found = json.loads(_tbh("query", files[3], "--store", store, "--top", "5", "--json"))
    assert found["results"][0]["neighbours"][0]["path"] == db.paths[3]
    # tbh serve encodes an upload as tbh query does (it refused features models)
    served = SearchService(store, device="cpu").by_images(
        [Upload("q.png", files[3].read_bytes())], 5
    )
    assert served[0].paths == [n["path"] for n in found["results"][0]["neighbours"]]

    # the weights moved: named, then passed; other weights are refused
    moved = (tmp_path / "timm.pt").rename(tmp_path / "moved.pt")
    make_images(tmp_path / "images", {"c": 2}, seed=3)
    index = ("index", tmp_path / "images", "--store", store, "--model", model, "--workers", "0")
    assert "which is gone; pass that file with --backbone-weights" in _fails(*index)
    _tbh(*index, "--backbone-weights", moved)
    assert len(open_store(store)) == 14
    write_timm_weights(tmp_path / "other.pt", seed=7)
    query = ("query", files[0], "--store", store, "--backbone-weights", tmp_path / "other.pt")
    assert "holds other weights" in _fails(*query)


def test_onnx_features_model_runs_the_users_file(tmp_path):
    extractor = tmp_path / "x.onnx"
    net = write_onnx_extractor(extractor)
    run = byo_run(tmp_path, f"onnx:{extractor}")
    model = export(run, out=tmp_path / "f.onnx", input="features")
    session, provider = image_session(model_info(model), "cpu")
    files = sorted((tmp_path / "images").rglob("*.png"))
    from tbhcli.imaging.images import load_image

    pixels = np.stack([load_image(f, 32) for f in files])
    codes = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    assert provider == "CPUExecutionProvider"
    assert bit_differences(codes, reference_codes(run, files, net, MEAN, STD)).max() <= 1


def test_backbone_weights_are_for_features_models_only(tmp_path):
    write_onnx_extractor(tmp_path / "x.onnx")
    run = byo_run(tmp_path, f"onnx:{tmp_path / 'x.onnx'}")
    images_model = export(run, out=tmp_path / "m.onnx")
    with pytest.raises(TbhError, match="holds its backbone; --backbone-weights is for features"):
        image_session(model_info(images_model), "cpu", tmp_path / "x.onnx")
