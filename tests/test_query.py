import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tbhcli.apps.query import query
from tbhcli.cli import app
from tbhcli.deploy.export import export
from tbhcli.errors import TbhError
from tests.tiny_workspace import hamming, make_lsh_run, reference_codes


@pytest.fixture
def workspace(indexed_workspace):
    ws = indexed_workspace
    return ws.root, ws.run, ws.images, ws.queries


def _brute_force(run, files, queries, k):
    """Sort every database image by (Hamming distance, row): the obvious reference."""
    dist = hamming(reference_codes(run, queries), reference_codes(run, files))  # (Q, N)
    order = [np.lexsort((np.arange(len(files)), row))[:k] for row in dist]
    return [(dist[q][o], o) for q, o in enumerate(order)]


def test_top_k_equals_brute_force_with_ties_by_row(workspace, monkeypatch):
    ws, run, files, queries = workspace
    monkeypatch.chdir(ws)
    results = query(queries, top=30, device="cpu")  # store and model from the workspace
    expected = _brute_force(run, files, queries, 30)
    for result, q, (dist, ids) in zip(results, queries, expected, strict=True):
        assert result.query == q
        np.testing.assert_array_equal(result.distances, dist)
        np.testing.assert_array_equal(result.ids, ids)
        rel = [files[i].relative_to(ws / "images").as_posix() for i in ids]
        assert result.paths == rel
        assert result.labels == [p.split("/")[0] if "/" in p else None for p in rel]


def test_folder_argument_and_radius(workspace, monkeypatch):
    ws, run, files, queries = workspace
    monkeypatch.chdir(ws)
    results = query([ws / "queries"], top=1000, radius=5, device="cpu")
    assert [r.query for r in results] == queries
    dist = hamming(reference_codes(run, queries), reference_codes(run, files))
    for result, row in zip(results, dist, strict=True):
        within = np.flatnonzero(row <= 5)
        expected = within[np.lexsort((within, row[within]))]
        np.testing.assert_array_equal(result.ids, expected)
        assert (result.distances <= 5).all()


def test_query_image_that_is_in_the_store_finds_itself_first(workspace, monkeypatch):
    ws, _, files, _ = workspace
    monkeypatch.chdir(ws)
    (result,) = query([files[7]], top=3, device="cpu")
    assert result.distances[0] == 0 and 7 in result.ids[result.distances == 0]


def test_query_label_is_the_class_folder_where_known(workspace, monkeypatch, tmp_path):
    ws, _, files, queries = workspace
    monkeypatch.chdir(ws)
    by_folder = query([ws / "queries"], top=1, device="cpu")  # queries/q/*.png
    assert [r.label for r in by_folder] == ["q"] * len(queries)
    inside = query([files[0], queries[0]], top=1, device="cpu")  # images/cat/...: the store's
    assert [r.label for r in inside] == ["cat", None]
    assert inside[0].setup.bits == 16 and inside[0].setup.rows == len(files)


def test_refuses_a_model_the_store_was_not_built_with(workspace, monkeypatch, tmp_path):
    ws, _, _, queries = workspace
    monkeypatch.chdir(ws)
    other = export(make_lsh_run(tmp_path / "other", bits=16, seed=3), out=tmp_path / "o.onnx")
    with pytest.raises(TbhError, match="not the model"):
        query(queries, model=other, device="cpu")
    monkeypatch.chdir(tmp_path)  # the model is found beside the store
    assert query(queries[:1], store=ws / "codes.zarr", device="cpu")[0].paths
    moved = tmp_path / "ws"
    shutil.copytree(ws, moved, ignore=shutil.ignore_patterns("onnx"))
    monkeypatch.chdir(moved)
    with pytest.raises(TbhError, match="pass it with --model"):
        query(queries, device="cpu")
    with pytest.raises(TbhError, match="model file not found"):
        query(queries, model=tmp_path / "typo.onnx", device="cpu")


def test_cli_json_and_html_gallery(workspace, monkeypatch, tmp_path):
    ws, run, files, queries = workspace
    monkeypatch.chdir(ws)
    odd = tmp_path / 'a<b>&"c.png'  # a path that must be escaped in HTML
    shutil.copy(queries[0], odd)
    html_out = tmp_path / "out" / "gallery.html"  # a folder that --html creates
    result = CliRunner().invoke(
        app, ["query", str(odd), str(queries[1]), "--top", "5", "--json", "--html", str(html_out)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["schema"] == "tbh.query/1" and payload["store"] == "codes.zarr"
    assert payload["model"] == "onnx/lsh16.onnx"  # the store's own, named
    assert "using model onnx/lsh16.onnx (the store's own)" in result.stderr
    expected = _brute_force(run, files, [odd, queries[1]], 5)
    for item, (dist, ids) in zip(payload["results"], expected, strict=True):
        assert [n["row"] for n in item["neighbours"]] == ids.tolist()
        assert [n["distance"] for n in item["neighbours"]] == dist.tolist()
        assert [n["rank"] for n in item["neighbours"]] == [1, 2, 3, 4, 5]
    page = html_out.read_text()
    assert 'a<b>&"c.png' not in page and "a&lt;b&gt;&amp;&quot;c.png" in page
    assert page.count("data:image/png;base64,") == 2 * 6  # 36 x 44 px: small, lossless
    assert "model lsh16.onnx (lsh, 16 bits)" in page


def test_cli_table_and_errors(workspace, monkeypatch):
    ws, _, _, queries = workspace
    monkeypatch.chdir(ws)
    result = CliRunner().invoke(app, ["query", str(queries[0]), "--top", "3"])
    assert result.exit_code == 0 and "distance" in result.stdout
    missing = CliRunner().invoke(app, ["query", "nope.jpg"])
    assert missing.exit_code == 1 and "not found" in missing.output
    empty = ws / "empty.jpg"
    empty.write_bytes(b"")
    bad = CliRunner().invoke(app, ["query", str(empty)])
    assert bad.exit_code == 1 and "could be decoded" in bad.output


def test_multi_index_gives_the_same_neighbours(workspace, monkeypatch):
    from tbhcli.storage.mih_tables import update_tables

    ws, run, files, queries = workspace
    monkeypatch.chdir(ws)
    update_tables(ws / "codes.zarr", build=True)
    expected = _brute_force(run, files, queries, 30)
    for method in ("mih", "auto"):
        results = query(queries, top=30, method=method)
        for result, (dist, ids) in zip(results, expected, strict=True):
            np.testing.assert_array_equal(result.distances, dist)
            np.testing.assert_array_equal(result.ids, ids)
    cli = CliRunner().invoke(app, ["query", str(queries[0]), "--method", "mih", "--json"])
    assert cli.exit_code == 0, cli.output
    ids = [r["row"] for r in json.loads(cli.stdout)["results"][0]["neighbours"]]
    assert ids == expected[0][1][:10].tolist()


def test_printed_paths_open_from_where_the_user_stands(workspace, monkeypatch, tmp_path):
    """The table showed `cat/3.png` (relative to the indexed folder): not a file from here."""
    ws, _, _, queries = workspace
    wide = {"COLUMNS": "300"}
    for cwd, store in ((ws, "codes.zarr"), (tmp_path, str(ws / "codes.zarr"))):
        monkeypatch.chdir(cwd)
        args = ["query", str(queries[0]), "--top", "5", "--store", store, "--device", "cpu"]
        result = CliRunner().invoke(app, args, env=wide)
        assert result.exit_code == 0, result.output
        printed = re.findall(r"│\s+\d+\s+│\s+\d+\s+│ (\S+)\s+│", result.stdout)
        assert len(printed) == 5, result.stdout
        assert all(Path(p).is_file() for p in printed), printed  # opened from here
        assert all(Path(p).is_absolute() == (cwd == tmp_path) for p in printed)
