"""tbhcli.imaging.scan and thumbnails: every image a user has is found by its content, decoded
with its own value range, and every file left out is named with its reason."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tbhcli.cli import app
from tbhcli.errors import TbhError
from tbhcli.imaging.images import to_rgb
from tbhcli.imaging.scan import scan_folder
from tbhcli.imaging.thumbnails import gray_thumbnail


def gradient(width: int = 64, height: int = 48) -> np.ndarray:
    """A float picture 0..1 [H, W]: a diagonal ramp."""
    y, x = np.mgrid[0:height, 0:width]
    return (x / width + y / height) / 2


def test_every_pillow_format_is_found_by_content(tmp_path):
    """Issue 20: .ppm/.pgm/.pbm were skipped without a word; the format comes from the bytes."""
    ramp = Image.fromarray((gradient() * 255).astype(np.uint8))
    rgb = ramp.convert("RGB")
    rgb.save(tmp_path / "a.ppm")
    ramp.save(tmp_path / "a.pgm")
    ramp.convert("1").save(tmp_path / "a.pbm")
    rgb.save(tmp_path / "a.gif")
    rgb.save(tmp_path / "a.webp")
    rgb.save(tmp_path / "a.bmp")
    rgb.save(tmp_path / "a.tif")
    rgb.save(tmp_path / "no-extension", format="PNG")  # a photo saved without its suffix
    (tmp_path / "fake.jpg").write_text("not a picture")
    (tmp_path / "notes.txt").write_text("a note")
    scan = scan_folder(tmp_path)
    names = [p.as_posix() for p in scan.files]
    assert names == ["a.bmp", "a.gif", "a.pbm", "a.pgm", "a.ppm", "a.tif", "a.webp",
                     "no-extension"]  # fmt: skip
    assert scan.skipped == [("fake.jpg", "not an image (its content is no known image format)")]
    for name in names:  # each decodes to the same ramp, give or take the format's rounding
        thumb = gray_thumbnail(tmp_path / name)
        tolerance = 40 if name.endswith((".pbm", ".gif")) else 3
        assert np.abs(thumb - gray_thumbnail(tmp_path / "a.pgm")).mean() < tolerance, name


def test_float_and_16_bit_tiffs_keep_their_picture(tmp_path):
    """Issue 20/21: 32-bit float TIFFs became all black or all white."""
    ramp = gradient()
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "unit.tif")  # 0..1
    Image.fromarray((ramp * 4000 - 1000).astype(np.float32)).save(tmp_path / "wide.tif")
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "deep.tif")
    stretched = (ramp - ramp.min()) / (ramp.max() - ramp.min())  # a range not 0..1: its own
    for name, values in (("unit.tif", ramp), ("wide.tif", stretched), ("deep.tif", ramp)):
        with Image.open(tmp_path / name) as img:
            got = np.asarray(to_rgb(img).convert("L"), dtype=float)
        assert np.abs(got - values * 255).max() <= 2, name
        thumb = gray_thumbnail(tmp_path / name)
        assert thumb.min() < 40 and thumb.max() > 215  # the ramp, not one flat colour
    nan = ramp.astype(np.float32)
    nan[0, 0] = np.nan
    with Image.open(_save(nan, tmp_path / "nan.tif")) as img:
        assert np.asarray(to_rgb(img))[0, 0].tolist() == [0, 0, 0]


def _save(pixels: np.ndarray, path: Path) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def test_links_and_unreadable_folders_are_named(tmp_path, monkeypatch):
    """Issue 20: an unreadable (chmod 000) subfolder was skipped without a word."""
    root = tmp_path / "photos"
    (root / "locked").mkdir(parents=True)
    (root / ".tbh").mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    Image.new("RGB", (8, 8)).save(root / ".tbh" / "hidden.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    (root / "in.png").symlink_to(root / "a.png")
    (root / "out.png").symlink_to(tmp_path / "outside.png")
    (root / "broken.png").symlink_to(root / "gone.png")
    (root / "dir-link").symlink_to(tmp_path)
    real_scandir = os.scandir

    def scandir(path="."):  # root reads any folder: refuse one as chmod 000 would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_folder(root)
    assert [p.as_posix() for p in scan.files] == ["a.png", "in.png"]
    assert scan.links == {Path("in.png")}
    assert scan.skipped == [
        ("broken.png", "broken symbolic link"),
        ("dir-link", "symbolic link to a folder (not followed)"),
        ("locked", "cannot read folder: Permission denied"),
        ("out.png", "symbolic link leading outside the folder"),
    ]
    result = CliRunner().invoke(app, ["duplicates", str(root), "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    skipped = json.loads(result.stdout)["skipped"]
    assert {"path": "locked", "reason": "cannot read folder: Permission denied"} in skipped
    assert len(skipped) == 4 and "locked" in result.stderr


def test_undecodable_files_are_named_and_counted(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = CliRunner().invoke(app, ["duplicates", str(tmp_path), "--json", "--workers", "0"])
    assert result.exit_code == 0, result.output
    [skipped] = json.loads(result.stdout)["skipped"]
    assert skipped["path"] == "cut.jpg" and skipped["reason"].startswith("cannot decode")


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(TbhError, match="not found"):
        scan_folder(tmp_path / "nowhere")


def test_heic_photos_are_read_through_the_heif_extra(tmp_path):
    """Issue 20 build 4: HEIC/AVIF through a maintained plugin, as an optional extra."""
    pillow_heif = pytest.importorskip("pillow_heif")  # the `heif` extra (in `dev`)
    ramp = Image.fromarray((gradient(96, 64) * 255).astype(np.uint8)).convert("RGB")
    pillow_heif.from_pillow(ramp).save(tmp_path / "IMG_0001.HEIC", quality=90)
    ramp.save(tmp_path / "a.png")
    scan = scan_folder(tmp_path)
    assert [p.as_posix() for p in scan.files] == ["IMG_0001.HEIC", "a.png"] and scan.heif
    heic = gray_thumbnail(tmp_path / "IMG_0001.HEIC")
    assert np.abs(heic - gray_thumbnail(tmp_path / "a.png")).mean() < 4
    result = CliRunner().invoke(app, ["duplicates", str(tmp_path), "--json", "--workers", "0"])
    [group] = json.loads(result.stdout)["groups"]
    assert sorted(i["path"] for i in group["items"]) == ["IMG_0001.HEIC", "a.png"]
