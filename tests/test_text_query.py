"""Text queries on a CLIP-backbone run, end to end on a tiny random open_clip model (local
weights, built-in tokenizer, nothing downloaded): features -> train -> export (images model and
text model) -> index -> `tbh query --text` / `POST /query {"text"}`, against a slow reference
(open_clip in torch, the run's encoder, brute-force Hamming)."""

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tbhcli.apps.info import info
from tbhcli.apps.query import query_text
from tbhcli.apps.serve.api import create_app
from tbhcli.apps.serve.service import SearchService
from tbhcli.cli import app
from tbhcli.deploy.export import export
from tbhcli.errors import TbhError
from tbhcli.hashing.runs import load_run
from tbhcli.storage.store import open_store
from tbhcli.workspace import file_sha256
from tests.byo_models import CLIP_TEXT_CONFIG, build_clip_text_workspace, write_clip_folder
from tests.tiny_workspace import hamming

pytest.importorskip("open_clip")
TEXTS = ["a red bicycle", "two dogs on the grass"]


@pytest.fixture(scope="module")
def clip_workspace(tmp_path_factory):
    """A workspace whose run hashes a tiny CLIP's image features (16-d) into 16 bits."""
    ws = tmp_path_factory.mktemp("text")
    run, model = build_clip_text_workspace(ws)
    return ws, run, model


def reference_text_codes(ws, run, texts) -> np.ndarray:
    """open_clip in torch: encode_text, L2-normalise, scale to the image features' mean norm,
    then the run's own encoder."""
    import open_clip

    clip = open_clip.create_model(f"local-dir:{ws / 'clip'}", pretrained=None, load_weights=False)
    clip.load_state_dict(torch.load(ws / "clip" / "open_clip_pytorch_model.bin"))
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=16)(texts)
    with torch.no_grad():
        text = clip.eval().encode_text(tokens)
    text = text / text.norm(dim=-1, keepdim=True)
    scale = np.linalg.norm(np.load(ws / "f.npy"), axis=1).mean()
    return load_run(run).encode((text * float(scale)).numpy())


def test_text_queries_search_the_image_codes(clip_workspace, monkeypatch):
    ws, run, model = clip_workspace
    monkeypatch.chdir(ws)
    assert (ws / "onnx" / "clip16.text.onnx").is_file()
    (listed,) = info(ws)["models"]  # the text model is its images model's `text_model`
    assert listed["file"] == "clip16.onnx" and listed["text_model"] is True
    results = query_text(TEXTS, top=12, device="cpu")
    db_codes = open_store(ws / "codes.zarr").read_codes(0)
    expected = reference_text_codes(ws, run, TEXTS)
    distances = hamming(expected, db_codes)  # (2, 30)
    for result, text, row in zip(results, TEXTS, distances, strict=True):
        order = np.lexsort((np.arange(len(row)), row))[:12]
        assert result.query == text
        np.testing.assert_array_equal(result.ids, order)
        np.testing.assert_array_equal(result.distances, row[order])
    assert len({tuple(r.ids) for r in results}) == 2  # two texts, two different rankings

    cli = CliRunner().invoke(app, ["query", "--text", TEXTS[0], "--top", "12", "--json"])
    assert cli.exit_code == 0, cli.output
    answer = json.loads(cli.stdout)["results"][0]
    assert answer["query"] == TEXTS[0]
    assert [n["row"] for n in answer["neighbours"]] == results[0].ids.tolist()

    with TestClient(create_app(SearchService(device="cpu", threads=1))) as client:
        assert client.get("/stats").json()["text_queries"] is True
        served = client.post("/query?top=12", json={"text": TEXTS[1]}).json()[0]
        assert [n["row"] for n in served["neighbours"]] == results[1].ids.tolist()
        empty = client.post("/query", json={"text": "   "})
        assert empty.status_code == 400 and "text query is empty" in empty.json()["error"]


def test_text_needs_a_text_model_and_says_so(clip_workspace, tmp_path, monkeypatch, capsys):
    ws, run, _ = clip_workspace
    monkeypatch.chdir(ws)
    both = CliRunner().invoke(app, ["query", "images/a", "--text", "x"])
    assert both.exit_code == 1 and "one of the two" in both.output
    neither = CliRunner().invoke(app, ["query"])
    assert neither.exit_code == 1 and "IMAGE_OR_DIR" in neither.output
    # an image-tower-only checkpoint: the export says why there is no text model
    write_clip_folder(tmp_path / "visual", seed=4, config=CLIP_TEXT_CONFIG, visual_only=True)
    config = json.loads((run / "config.json").read_text())
    other = tmp_path / "runs" / "visual16"
    other.mkdir(parents=True)
    for name in ("encoder.safetensors", "log.jsonl"):
        (other / name).write_bytes((run / name).read_bytes())
    weights = tmp_path / "visual" / "open_clip_pytorch_model.bin"
    recipe = {
        "backbone": f"clip:{tmp_path / 'visual'}",
        "backbone_weights": "sha256:" + file_sha256(weights),
        "backbone_weights_file": str(weights),
    }
    (other / "config.json").write_text(json.dumps(config | recipe))
    model = export(other, out=tmp_path / "onnx" / "visual16.onnx")
    assert not (tmp_path / "onnx" / "visual16.text.onnx").exists()
    assert "holds the image tower only" in capsys.readouterr().err
    from tbhcli.deploy.runtime import model_info
    from tbhcli.deploy.text_runtime import open_text_model

    with pytest.raises(TbhError, match="no text model beside .*visual16.onnx"):
        open_text_model(model_info(model))
