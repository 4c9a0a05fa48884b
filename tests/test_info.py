import os
import re
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from tbhcli.apps.info import info
from tbhcli.cli import app
from tbhcli.deploy.export import export
from tbhcli.imaging.featureset import save_features
from tbhcli.indexing.index import index
from tbhcli.training.fit import summary, train
from tests.servers import serve_env
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


def test_runs_show_their_score_date_and_which_is_the_default(tmp_path, monkeypatch):
    """The kept method's held-out score (from the log's summary), when the weights were written,
    and `*` on the run and model that commands pick when none is named."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    save_features(tmp_path / "f.npy", rng.standard_normal((300, 16)).astype(np.float32))
    trained = train(tmp_path / "f.npy", bits=8, method="itq", quiet=True)
    os.utime(trained / "encoder.safetensors", (1e9, 1e9))  # 2001: older than the next run
    make_lsh_run(tmp_path / "runs" / "lsh16", bits=16)
    runs = {r["name"]: r for r in info(tmp_path)["runs"]}
    kept = summary(trained)
    assert runs[trained.name]["score"] == {
        "metric": kept["metric"],
        "value": kept["scores"]["itq"][kept["metric"]],
    }
    assert runs[trained.name]["trained"].startswith("2001-09-")
    assert runs["lsh16"]["score"] is None  # made without `tbh train`: no summary
    assert [r["name"] for r in runs.values() if r["default"]] == ["lsh16"]  # the newest

    printed = CliRunner().invoke(app, ["info"], env={"COLUMNS": "200"})
    assert re.search(r"lsh16 \*", printed.stdout) and f"{trained.name} *" not in printed.stdout
    assert f"{kept['metric']} {runs[trained.name]['score']['value']:.4f}" in printed.stdout


def test_info_does_not_import_torch(tmp_path):
    """`tbh info` took 4.3 s on a loaded machine, most of it importing torch to read JSON."""
    make_lsh_run(tmp_path / "runs" / "lsh8", bits=8)
    code = "import sys; from tbhcli.apps.info import info; info('.'); print('torch' in sys.modules)"
    run = [sys.executable, "-c", code]
    out = subprocess.run(run, cwd=tmp_path, env=serve_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
