"""tbhcli.apps.gallery: only files inside the indexed folder are shown; cards, header, colours."""

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tbhcli.apps.gallery import inside_root, thumbnail, write_gallery
from tbhcli.apps.query import QueryResult, QuerySetup


def _png(path: Path, size: int, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(size + value).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _result(root: Path, query: Path, paths: list[str], labels: list, label=None, setup=None):
    k = len(paths)
    return QueryResult(
        query, np.arange(k, dtype=np.int32), np.arange(k), paths, labels, root, label, setup
    )


@pytest.fixture
def tree(tmp_path):
    """images/ (the indexed root) with two images, a secret beside it, links in and out."""
    root = tmp_path / "images"
    _png(root / "cat" / "a.png", 28)
    _png(root / "dog" / "b.png", 28, 1)
    secret = _png(tmp_path / "x" / "secret.png", 28, 2)
    (root / "out.png").symlink_to(secret)
    (root / "outdir").symlink_to(tmp_path / "x", target_is_directory=True)
    (root / "in.png").symlink_to(root / "cat" / "a.png")
    return root, secret


def test_inside_root_refuses_paths_that_leave_the_root(tree):
    root, secret = tree
    assert inside_root(root, "cat/a.png") == (root / "cat" / "a.png").resolve()
    assert inside_root(root, "in.png") == (root / "cat" / "a.png").resolve()  # a link inside
    assert inside_root(root, "missing/z.png") == (root / "missing" / "z.png").resolve()
    for stored in [
        "../x/secret.png",
        "../../x/secret.png",
        "cat/../../x/secret.png",
        str(secret),  # absolute
        "out.png",  # a symlink out of the root
        "outdir/secret.png",  # through a symlinked folder
        "",
        "cat/a\x00.png",
    ]:
        assert inside_root(root, stored) is None, stored


def test_gallery_never_embeds_a_file_outside_the_root(tree, tmp_path):
    root, secret = tree
    hostile = ["../x/secret.png", str(secret), "out.png", "outdir/secret.png"]
    query = _png(tmp_path / "q.png", 28, 3)
    result = _result(root, query, ["cat/a.png", *hostile, "dog/b.png"], [None] * 6)
    page = write_gallery([result], tmp_path / "g.html").read_text()
    secret_uri, _ = thumbnail(secret)
    assert secret_uri not in page
    assert page.count("outside the indexed folder") == len(hostile)
    for shown in ("cat/a.png", "dog/b.png"):
        assert thumbnail(root / shown)[0] in page
    assert thumbnail(query)[0] in page  # the query itself is the user's own file


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_small_images_are_lossless_and_scaled_up_with_crisp_pixels(tmp_path):
    digit = _png(tmp_path / "digit.png", 28)
    uri, small = thumbnail(digit)
    assert small and uri.startswith("data:image/png;base64,")
    np.testing.assert_array_equal(np.asarray(_decode(uri)), np.asarray(Image.open(digit)))
    photo = _png(tmp_path / "photo.png", 300)
    uri, small = thumbnail(photo)
    assert not small and uri.startswith("data:image/jpeg;base64,")
    assert _decode(uri).size == (128, 128)
    page = write_gallery([_result(tmp_path, digit, ["photo.png"], [None])], tmp_path / "g.html")
    text = page.read_text()
    assert re.search(r"img\.pixels \{[^}]*image-rendering: pixelated", text)
    assert re.search(r"figure img \{[^}]*width: 128px; height: 128px", text)  # scaled to the card
    assert text.count('class="pixels"') == 1  # the 28 px query, not the 300 px photo


def test_relevance_colours_and_header(tree, tmp_path):
    root, _ = tree
    setup = QuerySetup(tmp_path / "codes.zarr", 4000, Path("onnx/tbh-32.onnx"), "tbh", 32, 0.123)
    paths, labels = ["cat/a.png", "dog/b.png", "in.png"], ["cat", "dog", None]
    known = _result(root, root / "cat" / "a.png", paths, labels, "cat", setup)
    unknown = _result(root, tmp_path / "q.png", paths[:2], labels[:2], None, setup)
    text = write_gallery([known, unknown], tmp_path / "g.html").read_text()
    figures = re.findall(r'<figure class="([^"]*)">', text)
    assert figures == ["query", "relevant", "irrelevant", "", "query", "", ""]
    assert "1/3 of class cat" not in text  # one result has no class: no score for that query
    assert "model tbh-32.onnx (tbh, 32 bits)" in text
    assert f"store {tmp_path / 'codes.zarr'} (4,000 images)" in text
    assert "2 queries in 0.12 s" in text
    scored = _result(root, root / "cat" / "a.png", paths[:2], labels[:2], "cat", setup)
    assert "1/2 of class cat" in write_gallery([scored], tmp_path / "s.html").read_text()


def test_symlinked_root_is_followed(tmp_path):
    real = tmp_path / "real"
    _png(real / "cat" / "a.png", 28)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert inside_root(tmp_path / "link", "cat/a.png") == (real / "cat" / "a.png").resolve()
