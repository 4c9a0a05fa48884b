"""Feature files as users hand them to `tbh train`: the wrong kind of file is one clear line."""

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from tbhcli.cli import app

runner = CliRunner()


def _train(path) -> str:
    result = runner.invoke(app, ["train", str(path), "--bits", "8"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())  # one message, however the terminal wrapped it


def test_an_image_is_not_features_and_the_message_says_how_to_make_them(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    message = _train(tmp_path / "img.png")
    assert "is not a NumPy .npy file of features" in message
    assert "tbh features IMAGES_DIR -o NAME.npy" in message
    assert "allow_pickle" not in message  # numpy's advice would run code from a file


def test_a_folder_of_images_is_not_features(tmp_path):
    (tmp_path / "images").mkdir()
    message = _train(tmp_path / "images")
    assert "is a folder, not a features file NAME.npy" in message and "not found" not in message


def test_an_object_array_is_refused_unread(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    message = _train(tmp_path / "objects.npy")
    assert "holds Python objects" in message and "never unpickles" in message
    assert "allow_pickle" not in message


def test_a_missing_file_is_named(tmp_path):
    assert f"features file not found: {tmp_path / 'missing.npy'}" in _train(
        tmp_path / "missing.npy"
    )
