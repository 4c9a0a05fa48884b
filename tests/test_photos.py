"""tbhcli.apps.cnn_codes and photos: `tbh duplicates FOLDER --backbone CNN` fits, exports,
stores, reuses and groups; the default photo code's groups (more in test_photo_codes.py)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tbhcli.apps.cnn_codes import CachePaths, fit_binariser, update_store
from tbhcli.apps.photos import DEFAULT_RADIUS, folder_duplicates
from tbhcli.cli import app
from tbhcli.deploy.runtime import create_session, model_info, run_codes
from tbhcli.errors import TbhError
from tbhcli.hashing.perceptual import photo_codes
from tbhcli.imaging.images import load_image
from tbhcli.imaging.thumbnails import hash_thumbnails
from tbhcli.storage.store import open_store
from tests.byo_models import MEAN, STD, bit_differences, reference_codes, write_onnx_extractor


def scene(seed: int, size: int = 96, blobs: int = 6) -> Image.Image:
    """A smooth random picture: blobs x blobs of colour, so resized copies stay close (the photo
    code needs 9 or more blobs a side to keep distinct pictures apart: test_photo_codes.py)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (blobs, blobs, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        scene(i).save(root / f"p{i:02d}.png")
    shutil.copy(root / "p03.png", root / "copy-of-p03.png")  # an exact copy: distance 0
    return root


def store_codes(paths: CachePaths) -> dict[str, np.ndarray]:
    table = open_store(paths.store)
    return dict(zip(table.paths.tolist(), table.read_codes(), strict=True))


def test_first_run_fits_exports_and_stores_onnx_equal_codes(folder):
    paths = update_store(folder, backbone="tiny", bits=16, workers=0, device="cpu")
    assert paths.store == folder / ".tbh" / "duplicates.zarr"
    assert paths.model.is_file() and (paths.run / "config.json").is_file()
    config = json.loads((paths.run / "config.json").read_text())
    assert config["method"] == "lsh" and config["images"] == 13  # 13 < 2 * 16 bits: LSH
    codes = store_codes(paths)
    assert sorted(codes) == sorted(p.name for p in folder.glob("*.png"))
    # the first run's codes (torch, from features) equal what the exported model gives later
    session, _ = create_session(paths.model, "cpu")
    for name, code in codes.items():
        onnx_code = run_codes(session, load_image(folder / name, 32)[None])[0]
        assert (np.unpackbits(onnx_code) != np.unpackbits(code)).sum() <= 1


def test_second_run_embeds_only_new_files_with_the_same_model(folder):
    paths = update_store(folder, backbone="tiny", bits=16, workers=0, device="cpu")
    before = store_codes(paths)
    model_bytes = paths.model.read_bytes()
    scene(99).save(folder / "new.png")
    update_store(folder, backbone="tiny", bits=16, workers=0, device="cpu")
    after = store_codes(paths)
    assert paths.model.read_bytes() == model_bytes  # the binariser was not refitted
    assert set(after) - set(before) == {"new.png"}
    assert all(np.array_equal(after[k], v) for k, v in before.items())


def test_groups_match_a_brute_force_reference(folder):
    groups = folder_duplicates(folder, radius=3, backbone="tiny", bits=16, workers=0).groups
    codes = store_codes(CachePaths.for_folder(folder, None))
    names = list(codes)
    grouped = {p for g in groups for p in g.paths}
    for g in groups:
        for p, d in zip(g.paths, g.distances, strict=True):
            assert np.bitwise_count(codes[p] ^ codes[g.paths[0]]).sum() == d <= 3
    for a in names:  # every pair within the radius has at least one side grouped
        for b in names:
            if a < b and np.bitwise_count(codes[a] ^ codes[b]).sum() <= 3:
                assert a in grouped or b in grouped
    assert any({"p03.png", "copy-of-p03.png"} <= set(g.paths) for g in groups)


def test_undecodable_files_are_named_and_left_out(folder, tmp_path):
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    result = CliRunner().invoke(app, ["duplicates", str(folder), "--backbone", "tiny", "--bits",
                                      "16", "--workers", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "skipped 1 undecodable image(s): broken.jpg" in " ".join(result.output.split())
    assert "broken.jpg" not in store_codes(CachePaths.for_folder(folder, None))


def test_itq_when_the_folder_is_large_enough():
    features = np.random.default_rng(0).standard_normal((40, 24)).astype(np.float32)
    method, encoder = fit_binariser(features, 16, "tiny")
    assert method == "itq" and encoder.projection.shape == (24, 16)
    assert fit_binariser(features[:31], 16, "tiny")[0] == "lsh"


def test_default_run_groups_re_encoded_and_resized_copies_and_not_distinct_photos(tmp_path):
    """The photo code at its default radius: each file's code is its own thumbnail's code."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(10):
        scene(i, size=160, blobs=10).save(folder / f"p{i:02d}.png")
    original = Image.open(folder / "p04.png")
    original.save(folder / "p04-q30.jpg", quality=30)
    original.resize((70, 70), Image.Resampling.LANCZOS).save(folder / "p04-small.png")
    original.resize((160, 90), Image.Resampling.LANCZOS).save(folder / "p04-wide.png")
    found = folder_duplicates(folder, workers=0)
    assert [sorted(g.paths) for g in found.groups] == [
        ["p04-q30.jpg", "p04-small.png", "p04-wide.png", "p04.png"]
    ]
    assert found.radius == DEFAULT_RADIUS and found.hashed == 13 and found.store is None
    assert len(found.paths) == 13
    for name, code in zip(found.paths, found.codes, strict=True):
        assert np.array_equal(code, photo_codes(hash_thumbnails(folder / name)[None])[0])
    assert (folder / ".tbh" / "photo-codes.npz").is_file()
    assert not (folder / ".tbh" / "duplicates.zarr").exists()  # no model, no store
    again = folder_duplicates(folder, workers=0)
    assert again.hashed == 0 and np.array_equal(again.codes, found.codes)


def test_cli_folder_json_to_remove_html(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mine.zarr"
    args = ["duplicates", str(folder), "--backbone", "tiny", "--bits", "16", "--radius", "0"]
    args += ["--store", str(store), "--workers", "0", "--json"]
    result = CliRunner().invoke(app, [*args, "--to-remove", "rm.txt", "--html", "g.html"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["schema"] == "tbh.duplicates/1" and payload["store"] == str(store)
    group = next(g for g in payload["groups"] if "p03.png" in [i["path"] for i in g["items"]])
    assert {i["path"] for i in group["items"]} >= {"p03.png", "copy-of-p03.png"}
    assert sum(i["keep"] for i in group["items"]) == 1 and group["items"][0]["width"] == 96
    # equal codes, resolution and size: the older file is kept
    assert group["kept"] == "p03.png"
    assert str(folder / "copy-of-p03.png") in (tmp_path / "rm.txt").read_text().splitlines()
    assert (folder / "p03.png").is_file() and "copy-of-p03.png" in (tmp_path / "g.html").read_text()
    assert store.is_dir() and (tmp_path / "mine.onnx").is_file()
    assert "bits differ" not in result.output  # the folder's own model: no ONNX diagnostics
    again = CliRunner().invoke(app, ["duplicates", "--store", str(store), "--radius", "0"])
    assert again.exit_code == 0 and "copy-of-p03.png" in again.stdout
    page = CliRunner().invoke(app, ["duplicates", "--store", str(store), "--radius", "0",
                                    "--html", str(tmp_path / "again.html")])  # fmt: skip
    assert page.exit_code == 0 and "copy-of-p03.png" not in page.stdout  # no table: the page
    assert "groups of near duplicates" in page.stdout and "again.html" in page.stdout
    bad = CliRunner().invoke(app, ["duplicates", str(folder), "--keep", "best"])
    assert bad.exit_code == 1 and "--keep" in bad.output
    missing = CliRunner().invoke(app, ["duplicates", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_cli_folder_with_an_onnx_backbone(folder, tmp_path):
    """`--backbone onnx:PATH`: the user's extractor is merged into the folder's model; a second
    run embeds only the new file through that model, and its codes equal the first run's."""
    extractor = tmp_path / "extractor.onnx"
    net = write_onnx_extractor(extractor)
    args = ["duplicates", str(folder), "--backbone", f"onnx:{extractor}", "--bits", "16"]
    args += ["--radius", "0", "--workers", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    groups = [{i["path"] for i in g["items"]} for g in json.loads(result.stdout)["groups"]]
    assert {"p03.png", "copy-of-p03.png"} in groups
    paths = CachePaths.for_folder(folder, None)
    info = model_info(paths.model)
    assert info.backbone == f"onnx:{extractor}" and info.feature_dim == 24
    codes = store_codes(paths)
    files = [folder / name for name in codes]
    expected = reference_codes(paths.run, files, net, MEAN, STD)
    assert bit_differences(np.stack(list(codes.values())), expected).max() <= 1
    scene(3, size=80).save(folder / "p03-small.png")  # a resized copy, indexed by the model
    assert CliRunner().invoke(app, args).exit_code == 0
    new = store_codes(paths)["p03-small.png"][None]
    reference = reference_codes(paths.run, [folder / "p03-small.png"], net, MEAN, STD)
    assert bit_differences(new, reference).max() <= 1


@pytest.mark.parametrize(
    "backbone, message",
    [
        ("timm:", "has no NAME"),
        ("foo:bar", "unknown backbone kind"),
        ("timm:resnet18", "needs its weights"),
    ],
)
def test_cli_bad_backbones_are_one_line(folder, backbone, message):
    result = CliRunner().invoke(app, ["duplicates", str(folder), "--backbone", backbone])
    assert result.exit_code == 1 and message in " ".join(result.output.split())
    assert not (folder / ".tbh" / "duplicates.zarr").exists()


def test_cli_onnx_backbone_without_metadata_takes_size_mean_std(folder, tmp_path):
    extractor = tmp_path / "dynamic.onnx"
    net = write_onnx_extractor(extractor, size=None, metadata={})
    base = ["duplicates", str(folder), "--backbone", f"onnx:{extractor}", "--bits", "16"]
    base += ["--radius", "0", "--workers", "0"]
    missing = CliRunner().invoke(app, base)
    assert missing.exit_code == 1 and "--image-size" in " ".join(missing.output.split())
    stats = ["--image-size", "48", "--mean", "0.5,0.4,0.3", "--std", "0.2,0.25,0.3"]
    assert CliRunner().invoke(app, [*base, *stats]).exit_code == 0
    paths = CachePaths.for_folder(folder, None)
    assert model_info(paths.model).image_size == 48
    codes = store_codes(paths)
    expected = reference_codes(paths.run, [folder / n for n in codes], net, MEAN, STD)
    assert bit_differences(np.stack(list(codes.values())), expected).max() <= 1
    again = CliRunner().invoke(app, [*base, "--mean", "0.1,0.1,0.1"])  # the fit is kept
    assert again.exit_code == 1 and "was fitted with --mean" in " ".join(again.output.split())
    gray = CliRunner().invoke(app, ["features", str(folder), "-o", str(tmp_path / "g.npy"),
                                    "--backbone", "gray32", "--image-size", "64"])  # fmt: skip
    assert gray.exit_code == 1 and "32 x 32 thumbnail" in gray.output


def test_cli_onnx_backbone_with_a_fixed_batch_of_one(folder, tmp_path):
    """Such a file cannot be merged into a batched images model: the folder's model takes
    features and runs the file image by image, on the first run and on later ones."""
    write_onnx_extractor(tmp_path / "one.onnx", batch=1)
    args = ["duplicates", str(folder), "--backbone", f"onnx:{tmp_path / 'one.onnx'}"]
    args += ["--bits", "16", "--radius", "0", "--workers", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    groups = [{i["path"] for i in g["items"]} for g in json.loads(result.stdout)["groups"]]
    assert {"p03.png", "copy-of-p03.png"} in groups
    paths = CachePaths.for_folder(folder, None)
    assert model_info(paths.model).input == "features"
    shutil.copy(folder / "p05.png", folder / "copy-of-p05.png")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    groups = [{i["path"] for i in g["items"]} for g in json.loads(again.stdout)["groups"]]
    assert {"p05.png", "copy-of-p05.png"} in groups


class _Stop(Exception):
    pass


def test_the_first_run_embeds_on_the_device_asked_for(folder, monkeypatch):
    """Issue 22 item 8: `_first_run` never passed `device`, so --device cpu embedded on auto."""
    import tbhcli.imaging.embed

    seen = {}

    def embed(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(tbhcli.imaging.embed, "embed_images", embed)
    with pytest.raises(_Stop):
        update_store(folder, backbone="tiny", bits=16, workers=0, device="cpu")
    assert seen["device"] == "cpu"


def test_non_finite_features_stop_the_run_naming_the_model(folder, monkeypatch):
    """Issue 20 defect 4: a backbone that output NaN put all images in one group and listed
    all but one, exit 0."""
    import tbhcli.imaging.embed

    real = tbhcli.imaging.embed.embed_images

    def nan_embed(*args, **kwargs):
        feats, ok = real(*args, **kwargs)
        return np.full_like(feats, np.nan), ok

    monkeypatch.setattr(tbhcli.imaging.embed, "embed_images", nan_embed)
    args = ["duplicates", str(folder), "--backbone", "tiny", "--bits", "16", "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--to-remove", str(folder / "r")])
    assert result.exit_code == 1
    assert "backbone tiny gave NaN or infinite features for 13 of 13" in result.output
    assert not (folder / "r").exists()
    with pytest.raises(TbhError, match="NaN"):
        update_store(folder, backbone="tiny", bits=16, workers=0, device="cpu")


def test_a_file_changed_since_its_cnn_code_was_stored_leaves_the_groups(folder, tmp_path):
    """Issue 20 defect 2 on the CNN path: `tbh index` only adds new files, so a file replaced in
    place keeps its old code; it must not be grouped (or listed) by that code."""
    args = ["duplicates", str(folder), "--backbone", "tiny", "--bits", "16", "--radius", "0"]
    args += ["--workers", "0", "--json", "--to-remove", str(tmp_path / "rm.txt")]
    first = json.loads(CliRunner().invoke(app, args).stdout)
    assert any("copy-of-p03.png" in [i["path"] for i in g["items"]] for g in first["groups"])
    scene(77).save(folder / "copy-of-p03.png")  # another picture under the same name
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["changed"] == ["copy-of-p03.png"]
    assert not any("p03.png" in [i["path"] for i in g["items"]] for g in payload["groups"])
    assert "p03.png" not in (tmp_path / "rm.txt").read_text()
    assert "1 file(s) changed since their code was stored" in " ".join(result.stderr.split())
