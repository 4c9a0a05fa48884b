import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tbhcli
from tbhcli.cli import app
from tbhcli.errors import TbhError
from tbhcli.imaging.backbones import load_backbone
from tbhcli.imaging.embed import class_labels, features
from tbhcli.imaging.featureset import load_features, load_meta
from tbhcli.imaging.images import load_image
from tests.byo_models import MEAN, STD, normalise, write_clip_folder, write_onnx_extractor


def _folder(root: Path, layout: dict[str, int], seed: int = 0) -> Path:
    """Random RGB images of varied sizes: {"cat": 2} -> cat/0.png, cat/1.jpg."""
    rng = np.random.default_rng(seed)
    for cls, count in layout.items():
        for i in range(count):
            h, w = rng.integers(20, 60, size=2)
            path = root / cls / f"{i}.{'png' if i % 2 == 0 else 'jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return root


@torch.no_grad()
def _reference(root: Path, paths: list[str], size: int) -> np.ndarray:
    """One image at a time, in the main process: what the batched, parallel path must equal."""
    net = load_backbone("tiny")
    rows = [load_image(root / p, size)[None] for p in paths]
    return np.concatenate([net(torch.from_numpy(r).float() / 255).numpy() for r in rows])


@pytest.mark.parametrize("workers", [0, 2])
def test_features_end_to_end_skips_corrupt(tmp_path, workers):
    images = _folder(tmp_path / "imgs", {"dog": 3, "cat": 2, "bird": 2})
    (images / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (images / "dog" / "empty.jpg").write_bytes(b"")
    out = features(
        images, tmp_path / "f.npy", backbone="tiny", image_size=40, batch_size=3, workers=workers
    )

    fs = load_features(out)
    meta = load_meta(out)
    assert fs.features.shape == (7, 32)
    assert meta["classes"] == ["bird", "cat", "dog"]
    assert meta["skipped"] == ["cat/broken.png", "dog/empty.jpg"]
    assert meta["paths"][0] == "bird/0.png" and len(meta["paths"]) == meta["n"] == 7
    expected = [meta["classes"].index(p.split("/")[0]) for p in meta["paths"]]
    np.testing.assert_array_equal(fs.labels, expected)
    assert meta["backbone"] == "tiny" and meta["image_size"] == 40 and meta["dim"] == 32
    assert meta["weights"] == "random (seed 0)" and meta["tbh_version"] == tbhcli.__version__
    np.testing.assert_allclose(fs.features, _reference(images, meta["paths"], 40), atol=1e-5)


def test_features_without_class_folders_writes_no_labels(tmp_path):
    images = _folder(tmp_path / "imgs", {"a": 2})
    Image.new("RGB", (30, 30), "white").save(images / "loose.png")
    out = features(images, tmp_path / "f.npy", backbone="tiny", workers=0)
    assert load_features(out).labels is None
    assert not (tmp_path / "f.labels.npy").exists()
    assert load_meta(out)["classes"] == [] and load_meta(out)["image_size"] == 32
    # the verb's report is also the path of NAME.npy, and gives the `tbh.features/1` document
    assert out.path == tmp_path / "f.npy" and out.name == "f.npy"
    document = json.loads(out.to_json())
    assert (
        document["schema"] == "tbh.features/1" and document["n"] == 3 and document["labels"] is None
    )


def test_class_labels_sorted_names():
    labels, classes = class_labels([Path("b/1.png"), Path("a/2.png"), Path("b/3.png")])
    assert classes == ["a", "b"] and labels.tolist() == [1, 0, 1]
    assert class_labels([Path("b/1.png"), Path("x.png")]) == (None, [])


def test_features_user_errors(tmp_path):
    with pytest.raises(TbhError, match="not found"):
        features(tmp_path / "missing", tmp_path / "f.npy", backbone="tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TbhError, match="no images"):
        features(tmp_path / "empty", tmp_path / "f.npy", backbone="tiny")
    images = _folder(tmp_path / "imgs", {"a": 1})
    with pytest.raises(TbhError, match=r"\.npy"):
        features(images, tmp_path / "f.bin", backbone="tiny")
    with pytest.raises(TbhError, match="--workers"):
        features(images, tmp_path / "f.npy", backbone="tiny", workers=-1)
    with pytest.raises(TbhError, match="--image-size"):
        features(images, tmp_path / "f.npy", backbone="tiny", image_size=8)
    (images / "a" / "0.png").write_bytes(b"")
    with pytest.raises(TbhError, match="none of the 1 images"):
        features(images, tmp_path / "f.npy", backbone="tiny", workers=0)


def test_efficientnet_features_quick(tmp_path):
    images = _folder(tmp_path / "imgs", {"x": 2, "y": 1})
    out = features(images, tmp_path / "e.npy", image_size=32, workers=0)
    fs = load_features(out)
    assert fs.features.shape == (3, 1280) and (fs.features >= 0).all()
    assert load_meta(out)["weights"] == "imagenet"


def test_cli_features(tmp_path):
    images = _folder(tmp_path / "imgs", {"a": 2, "b": 2})
    out = tmp_path / "cli.npy"
    args = ["features", str(images), "-o", str(out), "--backbone", "tiny", "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--image-size", "36", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (4, 32)
    assert json.loads((tmp_path / "cli.meta.json").read_text())["image_size"] == 36


def test_cli_features_missing_folder_is_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["features", str(tmp_path / "nope"), "-o", "x.npy"])
    assert result.exit_code == 1
    assert "image folder not found" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_features_with_the_users_backbones(tmp_path):
    """onnx:PATH with --mean/--std and a dynamic input size; clip:FOLDER with its checkpoint."""
    images = _folder(tmp_path / "imgs", {"a": 2, "b": 1})
    extractor = tmp_path / "x.onnx"
    net = write_onnx_extractor(extractor, size=None, metadata={})
    out = tmp_path / "o.npy"
    args = ["features", str(images), "-o", str(out), "--backbone", f"onnx:{extractor}"]
    args += ["--workers", "0", "--image-size", "40", "--mean", "0.5,0.4,0.3", "--json"]
    result = CliRunner().invoke(app, [*args, "--std", "0.2,0.25,0.3"])
    assert result.exit_code == 0, result.output
    meta = load_meta(out)
    assert meta["backbone"] == f"onnx:{extractor}" and meta["image_size"] == 40
    np.testing.assert_allclose(meta["mean"], MEAN, rtol=1e-6)
    np.testing.assert_allclose(meta["std"], STD, rtol=1e-6)
    assert meta["weights"].startswith("sha256:") and json.loads(result.stdout)["dim"] == 24
    pixels = torch.from_numpy(np.stack([load_image(images / p, 40) for p in meta["paths"]]))
    with torch.no_grad():
        expected = net(normalise(pixels.float() / 255, MEAN, STD)).flatten(1).numpy()
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5, rtol=1e-4)
    no_stats = CliRunner().invoke(app, args)  # no --std, and the file has no tbh.std
    assert no_stats.exit_code == 1 and "--std" in no_stats.output

    write_clip_folder(tmp_path / "clip")
    clip = ["features", str(images), "-o", str(tmp_path / "c.npy"), "--workers", "0"]
    result = CliRunner().invoke(app, [*clip, "--backbone", f"clip:{tmp_path / 'clip'}"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "c.npy").shape == (3, 16)
    # the folder's own checkpoint, recorded as the file (as backbones.recipe does), so that
    # `tbh export` finds it again (it said the weights were gone)
    checkpoint = (tmp_path / "clip" / "open_clip_pytorch_model.bin").resolve()
    assert load_meta(tmp_path / "c.npy")["weights_file"] == str(checkpoint)
