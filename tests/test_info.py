from typer.testing import CliRunner

from tbhcli.apps.info import info
from tbhcli.cli import app
from tbhcli.deploy.export import export
from tbhcli.indexing.index import index
from tests.tiny_workspace import make_images, make_lsh_run


def test_info_lists_runs_models_and_store(tmp_path, monkeypatch):
    assert info(tmp_path) == {
        "workspace": str(tmp_path.resolve()),
        "runs": [],
        "models": [],
        "stores": [],
    }
    monkeypatch.chdir(tmp_path)
    make_lsh_run(tmp_path / "runs" / "lsh16", bits=16)
    model = export()
    make_images(tmp_path / "images", {"a": 3, "b": 2})
    index(tmp_path / "images", workers=0, device="cpu")
    result = info(tmp_path)
    assert [(r["name"], r["method"], r["bits"]) for r in result["runs"]] == [("lsh16", "lsh", 16)]
    assert [(m["file"], m["bits"], m["input"]) for m in result["models"]] == [
        ("lsh16.onnx", 16, "images")
    ]
    (store,) = result["stores"]
    assert (store["rows"], store["bits"], store["model"]) == (5, 16, model.name)
    assert store["classes"] == 2 and store["size_bytes"] > 0
    index(tmp_path / "images", store=tmp_path / "a.zarr", workers=0, device="cpu")
    (tmp_path / "not-a-store.zarr").mkdir()
    stores = info(tmp_path)["stores"]
    assert [s["path"].rsplit("/", 1)[-1] for s in stores] == [
        "codes.zarr",
        "a.zarr",
        "not-a-store.zarr",
    ]
    assert "error" in stores[2] and stores[1]["rows"] == 5
    printed = CliRunner().invoke(app, ["info"])
    assert (
        printed.exit_code == 0 and "lsh16.onnx" in printed.stdout and "5 images" in printed.stdout
    )


def test_a_run_with_a_corrupt_config_is_listed_with_its_error(tmp_path):
    make_lsh_run(tmp_path / "runs" / "good", bits=8)
    make_lsh_run(tmp_path / "runs" / "bad", bits=8)
    (tmp_path / "runs" / "bad" / "config.json").write_text("{not json")
    bad, good = info(tmp_path)["runs"]
    assert bad["name"] == "bad" and "cannot read" in bad["error"]
    assert (good["name"], good["bits"]) == ("good", 8)
