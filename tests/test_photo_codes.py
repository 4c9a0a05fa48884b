"""tbh duplicates PHOTOS_DIR, the default path: a code of each photo, its cache, its remove list.

Each test named after issue 20 reproduces a reported defect and failed before its fix.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import tbhcli
from tbhcli.apps.photo_codes import CACHE_NAME, folder_codes
from tbhcli.apps.photos import folder_duplicates
from tbhcli.cli import app
from tbhcli.hashing.perceptual import photo_codes
from tbhcli.imaging.thumbnails import hash_thumbnails
from tbhcli.storage.store import open_store
from tests.disks import fill


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A smooth random picture: 9 x 12 blobs of colour, so resized and re-encoded copies stay
    close and distinct pictures differ in 70 bits or more (fewer blobs make look-alikes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def run(*args: str) -> CliRunner:
    result = CliRunner().invoke(app, ["duplicates", *map(str, args), "--workers", "0"])
    assert result.exit_code == 0, result.output
    return result


def groups_of(folder, **options) -> list[list[str]]:
    return sorted(sorted(g.paths) for g in folder_duplicates(folder, workers=0, **options).groups)


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(8):
        scene(i).save(root / f"p{i}.png")
    return root


def test_a_small_copy_heavy_folder_groups_the_copies_and_nothing_else(tmp_path):
    """Issue 20: in a 12-file folder with 4 files of one photo (.jpeg/.png/.bmp + WebP), and in
    a folder of 7 copies + 5 distinct photos, the folder median grouped distinct photos and
    split the copies."""
    root = tmp_path / "twelve"
    root.mkdir()
    photo = scene(100)
    photo.save(root / "a.jpeg", quality=90)
    for suffix in ("png", "bmp"):
        Image.open(root / "a.jpeg").save(root / f"a.{suffix}")
    photo.save(root / "a-re.webp", quality=70)
    for i in range(8):
        scene(i).save(root / f"other{i}.jpg", quality=85)
    assert groups_of(root) == [["a-re.webp", "a.bmp", "a.jpeg", "a.png"]]
    heavy = tmp_path / "heavy"
    heavy.mkdir()
    for i in range(7):
        photo.resize((160 - 10 * i, 120 - 5 * i)).save(heavy / f"copy{i}.jpg", quality=60 + 5 * i)
    for i in range(5):
        scene(i).save(heavy / f"distinct{i}.png")
    assert groups_of(heavy) == [[f"copy{i}.jpg" for i in range(7)]]


def test_a_photo_gets_the_same_code_alone_or_among_many(tmp_path, photos):
    """Issue 20: the code of a photo depended on which other photos sat beside it."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(photos / "p3.png", alone / "p3.png")
    for i in range(6):
        scene(3).resize((150 - 7 * i, 110)).save(photos / f"p3-copy{i}.png")
    solo = folder_codes(alone, None)
    crowd = folder_codes(photos, None)
    assert np.array_equal(solo.codes[0], crowd.codes[crowd.paths.index("p3.png")])


def test_an_aspect_changing_resize_is_found(photos):
    """Issue 20: a centre-cropped thumbnail made a 640 x 480 photo and its 300 x 300 resize
    differ in about half of the bits."""
    scene(5, (640, 480)).save(photos / "big.png")
    scene(5, (640, 480)).resize((300, 300), Image.Resampling.LANCZOS).save(photos / "sq.png")
    codes = folder_codes(photos, None)
    big, square = (codes.codes[codes.paths.index(n)] for n in ("big.png", "sq.png"))
    assert np.bitwise_count(big ^ square).sum() <= 8
    assert ["big.png", "p5.png", "sq.png"] in groups_of(photos)


def test_a_file_replaced_in_place_is_hashed_again(photos, tmp_path):
    """Issue 20 defect 2: a replaced file kept its old code from .tbh/, so the original it
    "duplicated" was listed although it was now unique."""
    shutil.copy(photos / "p1.png", photos / "p1-copy.png")
    out = tmp_path / "remove.txt"
    run(photos, "--to-remove", out)
    assert out.read_text().splitlines() == [str(photos / "p1-copy.png")]
    scene(50).save(photos / "p1-copy.png")  # another picture under the same name
    os.utime(photos / "p1-copy.png", ns=(1, os.stat(photos / "p1.png").st_mtime_ns))
    result = run(photos, "--to-remove", out, "--json")
    assert json.loads(result.stdout)["groups"] == [] and out.read_text() == ""


def test_a_deleted_file_leaves_the_groups(photos):
    """Issue 20 defect 6 (folder path): files removed after a run are not reported again."""
    shutil.copy(photos / "p1.png", photos / "p1-copy.png")
    assert groups_of(photos) == [["p1-copy.png", "p1.png"]]
    (photos / "p1-copy.png").unlink()
    found = folder_duplicates(photos, workers=0)
    assert found.groups == [] and "p1-copy.png" not in found.paths and found.hashed == 0


def test_a_cache_of_another_recipe_or_damaged_is_recomputed_not_mixed(photos):
    cache = photos / ".tbh" / CACHE_NAME
    first = folder_codes(photos, cache)
    with np.load(cache) as data:
        arrays = dict(data)
    arrays["version"] = np.array("tbh-dct-folder-median/1")
    arrays["codes"] = np.zeros_like(arrays["codes"])  # what an older recipe might have stored
    np.savez(cache, **arrays)
    again = folder_codes(photos, cache)
    assert again.hashed == len(first.paths) and np.array_equal(again.codes, first.codes)
    cache.write_bytes(b"garbage")
    assert np.array_equal(folder_codes(photos, cache).codes, first.codes)


def test_links_outside_the_folder_are_skipped_and_named(photos, tmp_path):
    """Issue 20 defect 5 (folder path): nothing outside the folder is embedded or listed."""
    outside = tmp_path / "outside.png"
    scene(2).save(outside)
    (photos / "out-link.png").symlink_to(outside)
    (photos / "in-link.png").symlink_to(photos / "p2.png")
    out = tmp_path / "remove.txt"
    result = run(photos, "--to-remove", out, "--json")
    payload = json.loads(result.stdout)
    assert {"path": "out-link.png", "reason": "symbolic link leading outside the folder"} in (
        payload["skipped"]
    )
    [group] = payload["groups"]
    assert {i["path"] for i in group["items"]} == {"p2.png", "in-link.png"}
    assert group["kept"] == "p2.png"  # the regular file, never the link
    assert out.read_text().splitlines() == [str(photos / "in-link.png")]
    assert "symbolic link leading outside the folder" in " ".join(result.stderr.split())


def test_the_table_marks_the_kept_file(photos):
    """Issue 20 defect 7: the table did not say which file is kept."""
    shutil.copy(photos / "p4.png", photos / "p4-copy.png")
    os.utime(photos / "p4-copy.png", (1, 1))  # older: kept when everything else ties
    lines = run(photos).stdout.splitlines()
    [kept] = [line for line in lines if "keep" in line and ".png" in line]
    assert "p4-copy.png" in kept
    assert not any("keep" in line for line in lines if "p4.png" in line and "copy" not in line)


def test_with_a_store_the_codes_are_written_and_grouped_the_same(photos, tmp_path):
    shutil.copy(photos / "p6.png", photos / "p6-copy.png")
    store = tmp_path / "mine.zarr"
    first = json.loads(run(photos, "--store", store, "--json").stdout)
    table = open_store(store)
    assert table.attrs["model"].startswith("tbh-dct") and table.root == photos.resolve()
    again = json.loads(run("--store", store, "--json").stdout)  # the store alone
    assert again["radius"] == first["radius"]
    assert [g["items"] for g in again["groups"]] == [g["items"] for g in first["groups"]]
    (photos / "p6-copy.png").unlink()
    run(photos, "--store", store)  # a rebuilt store: the deleted file's row is gone
    assert "p6-copy.png" not in open_store(store).paths.tolist()


def test_python_api_answers_as_the_cli(photos, tmp_path):
    shutil.copy(photos / "p0.png", photos / "p0-copy.png")
    scene(0).resize((100, 75)).save(photos / "p0-small.jpg", quality=70)
    out = tmp_path / "remove.txt"
    payload = json.loads(run(photos, "--to-remove", out, "--json").stdout)
    assert tbhcli.find_duplicates_to_remove(photos) == out.read_text().splitlines()
    found = tbhcli.find_duplicates(photos)
    assert set(found) == {p.name for p in photos.glob("*.*") if p.is_file()}
    [group] = payload["groups"]
    members = [i["path"] for i in group["items"]]
    for name in members:
        assert sorted(p for p, _ in found[name]) == sorted(set(members) - {name})
    codes = {n: photo_codes(hash_thumbnails(photos / n)[None])[0] for n in members}
    first, (other, distance) = members[0], found[members[0]][0]
    assert distance == np.bitwise_count(codes[first] ^ codes[other]).sum()
    assert found["p3.png"] == []
    report = tbhcli.duplicates(str(photos), to_remove=tmp_path / "again.txt")  # the CLI's verb
    assert json.loads(report.to_json()) == payload
    assert report.listed == len(members) - 1
    assert (tmp_path / "again.txt").read_text() == out.read_text()


def test_the_folder_path_imports_no_torch(photos):
    """Issue 20: 2.7 s of a 76-photo run was importing torch."""
    code = (
        "import sys; from typer.testing import CliRunner; from tbhcli.cli import app; "
        f"r = CliRunner().invoke(app, ['duplicates', {str(photos)!r}, '--workers', '0']); "
        "assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'zarr', 'numba') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_radius_beyond_the_code_is_one_line(photos):
    result = CliRunner().invoke(app, ["duplicates", str(photos), "--radius", "500"])
    assert result.exit_code == 1 and "--radius must be 0..192" in result.output
    text = CliRunner().invoke(app, ["duplicates", str(photos / "p0.png")])
    assert text.exit_code == 1 and "is a file, not a folder" in text.output


def test_mirror_groups_flipped_and_rotated_copies(photos):
    """Issue 20 build 7: no hash in imagehash finds a mirrored or 90-degree-rotated copy."""
    original = Image.open(photos / "p7.png")
    original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "p7-flip.png")
    original.rotate(90, expand=True).save(photos / "p7-turned.jpg", quality=80)
    assert groups_of(photos) == []  # without --mirror: different pictures
    [group] = groups_of(photos, mirror=True)
    assert group == ["p7-flip.png", "p7-turned.jpg", "p7.png"]
    found = folder_duplicates(photos, workers=0, mirror=True)
    assert found.variants == 8 and (photos / ".tbh" / "photo-codes-mirror.npz").is_file()
    assert max(found.groups[0].distances) <= found.radius
    result = CliRunner().invoke(app, ["duplicates", str(photos), "--mirror", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["groups"]) == 1


def test_a_store_of_the_old_folder_fit_is_rebuilt_not_mixed(photos, tmp_path):
    """A store that tbh 0.1 wrote (gray32, dct codes against the folder's medians) holds codes
    of another recipe: it is recomputed, never extended."""
    from tbhcli.storage.writer import StoreLock, open_writer

    store = tmp_path / "old.zarr"
    with StoreLock(store):
        writer = open_writer(store, bits=128, model_sha256="0" * 64, model="old.onnx",
                             backbone="gray32", image_size=32, root=photos)  # fmt: skip
        writer.append(np.zeros((2, 16), np.uint8), ["p0.png", "p1.png"], np.full(2, -1))
    (tmp_path / "old-run").mkdir()
    (tmp_path / "old-run" / "config.json").write_text('{"backbone": "gray32", "method": "dct"}')
    (tmp_path / "old.onnx").write_bytes(b"an old model")
    assert json.loads(run(photos, "--store", store, "--json").stdout)["groups"] == []
    table = open_store(store)
    assert table.attrs["model"].startswith("tbh-dct") and table.bits == 192
    assert sorted(table.paths.tolist()) == sorted(p.name for p in photos.glob("*.png"))


def test_store_messages_name_what_to_do(photos, tmp_path, monkeypatch):
    """Issue 23's duplicates messages: a store of another folder, no store in a photo folder."""
    store = tmp_path / "mine.zarr"
    run(photos, "--store", store)
    other = tmp_path / "other"
    other.mkdir()
    scene(40).save(other / "x.png")
    result = CliRunner().invoke(app, ["duplicates", str(other), "--store", str(store)])
    assert result.exit_code == 1 and "pass another --store (one per folder)" in result.output
    assert "--root" not in result.output
    monkeypatch.chdir(photos)
    here = CliRunner().invoke(app, ["duplicates"])
    assert here.exit_code == 1 and "`tbh duplicates .`" in " ".join(here.output.split())


@pytest.fixture
def small_tmpfs(mount_tmpfs):
    """A 512 KiB tmpfs (needs root; CI runs as root): a folder to fill or make read-only."""
    return mount_tmpfs("512k")


def test_a_read_only_folder_is_searched_and_a_full_disk_is_one_line(small_tmpfs, tmp_path):
    """Issue 21.10: `tbh duplicates` on a read-only folder (no --store) was a traceback; outputs
    on a full disk left partial files."""
    root = small_tmpfs / "photos"
    root.mkdir()
    for i in range(3):
        scene(i).save(root / f"p{i}.png")
    shutil.copy(root / "p0.png", root / "p0-copy.png")
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    result = run(root)  # the codes cannot be cached: a warning, the groups all the same
    assert "not cached" in result.output and "Read-only file system" in result.output
    assert "p0-copy.png" in result.output and not (root / ".tbh").exists()
    subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    fill(small_tmpfs)
    listing = small_tmpfs / "remove.txt"
    args = ["duplicates", str(tmp_path / "elsewhere"), "--to-remove", str(listing)]
    shutil.copytree(root, tmp_path / "elsewhere", ignore=shutil.ignore_patterns(".tbh"))
    full = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert full.exit_code == 1 and "Traceback" not in full.output
    assert "No space left on device" in " ".join(full.output.split())
    assert not listing.exists() and sorted(p.name for p in small_tmpfs.iterdir()) == [
        "filler",
        "photos",
    ]
