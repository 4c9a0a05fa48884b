"""`tbh serve` through the ASGI test client (no socket), plus one real server started by the CLI."""

import io
import os
import re
import shutil
import subprocess
import threading

import httpx
import numpy as np
import pytest
import zarr
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import TypeAdapter
from typer.testing import CliRunner

from tbhcli.apps.query import query, results_payload
from tbhcli.apps.serve import LOOPBACK_NAMES
from tbhcli.apps.serve.api import Item, ItemsPage, QueryAnswer, Stats, create_app
from tbhcli.apps.serve.service import MAX_BATCH, MAX_TOP, SearchService
from tbhcli.cli import app as cli
from tbhcli.deploy.export import export
from tbhcli.indexing.index import index
from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreLock, open_writer
from tests.code_stores import write_checksums
from tests.servers import running_server, serve_command, serve_env
from tests.tiny_workspace import hamming, make_images, make_lsh_run, reference_codes

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """runs/, onnx/, codes.zarr (16 bits: many ties) of 2 x 12 images, and 3 query images."""
    ws = tmp_path_factory.mktemp("serve")
    run = make_lsh_run(ws / "runs" / "lsh16", bits=16)
    model = export(run, out=ws / "onnx" / "lsh16.onnx")
    files = make_images(ws / "images", {"cat": 12, "dog": 12})
    index(ws / "images", store=ws / "codes.zarr", model=model, workers=0, device="cpu")
    queries = make_images(ws / "queries", {"q": 3}, seed=9)
    return ws, run, files, queries


@pytest.fixture(scope="module")
def service(workspace):
    return SearchService(workspace[0] / "codes.zarr", device="cpu", threads=1)


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service, max_upload_bytes=1 << 20)) as c:
        yield c


def _png(path) -> tuple:
    return ("image", (path.name, path.read_bytes(), "image/png"))


def _error(response, status: int, pattern: str) -> None:
    """A 4xx answer is JSON {"error": one line} matching `pattern`."""
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and re.search(pattern, message), message


# ---- answers -----------------------------------------------------------------------------------


def test_upload_answers_the_json_of_tbh_query(workspace, client, monkeypatch):
    ws, run, files, queries = workspace
    response = client.post("/query?top=7", files=[_png(q) for q in queries[:2]])
    assert response.status_code == 200, response.text
    monkeypatch.chdir(ws)
    expected = results_payload(query(queries[:2], top=7, device="cpu"))
    for item in expected:
        item["query"] = os.path.basename(item["query"])  # the CLI names the file by its path
    assert response.json() == expected
    # and the neighbours are the brute-force ones (distance, then row)
    dist = hamming(reference_codes(run, queries[:1]), reference_codes(run, files))[0]
    order = np.lexsort((np.arange(len(files)), dist))[:7]
    assert [n["row"] for n in response.json()[0]["neighbours"]] == order.tolist()


def test_query_by_row_by_code_and_in_batches(workspace, client):
    _, run, files, _ = workspace
    codes = reference_codes(run, files)
    item = client.get("/items/5").json()
    with Image.open(files[5]) as original:
        width, height = original.size
    assert item == {
        "row": 5,
        "path": files[5].relative_to(workspace[0] / "images").as_posix(),
        "label": "cat",
        "code": codes[5].tobytes().hex(),
        "file_bytes": files[5].stat().st_size,
        "width": width,
        "height": height,
    }
    by_row = client.post("/query?top=24", json={"row": 5}).json()
    by_code = client.post("/query?top=24", json={"codes": item["code"]}).json()
    assert by_row[0]["query"] == item["path"] and by_code[0]["query"] == item["code"]
    assert by_row[0]["neighbours"] == by_code[0]["neighbours"]
    first = by_row[0]["neighbours"][0]
    assert first["distance"] == 0 and first["row"] <= 5  # itself, or an earlier exact twin
    expected = hamming(codes[5:6], codes)[0]
    assert [n["distance"] for n in by_row[0]["neighbours"]] == sorted(expected.tolist())

    batch = client.post("/query/batch?top=3", json={"rows": [7, 2, 7]}).json()
    singles = [client.post("/query?top=3", json={"row": i}).json()[0] for i in (7, 2, 7)]
    assert batch == singles
    hexes = [codes[i].tobytes().hex().upper() for i in (7, 2)]  # either case
    batch = client.post("/query/batch?top=3", json={"codes": hexes}).json()
    assert [b["neighbours"] for b in batch] == [s["neighbours"] for s in singles[:2]]


def test_radius_keeps_only_neighbours_within_it(workspace, client):
    _, run, files, _ = workspace
    codes = reference_codes(run, files)
    answer = client.post("/query?top=1000&radius=4", json={"row": 0}).json()[0]["neighbours"]
    dist = hamming(codes[:1], codes)[0]
    within = np.flatnonzero(dist <= 4)
    assert [n["row"] for n in answer] == within[np.lexsort((within, dist[within]))].tolist()


def test_items_thumbnails_stats_health_page_and_docs(workspace, client):
    thumb = client.get("/items/13/thumbnail")  # a 44 x 36 image: sent as it is, as PNG
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(thumb.content)) as img, Image.open(workspace[2][13]) as original:
        assert img.format == "PNG" and img.size == original.size
    stats = client.get("/stats").json()
    assert stats["rows"] == 24 and stats["bits"] == 16 and stats["classes"] == ["cat", "dog"]
    assert stats["model"] == "lsh16.onnx"
    assert stats["model_sha256"] == open_store(workspace[0] / "codes.zarr").attrs["model_sha256"]
    assert client.get("/health").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert "https://" not in page.text + client.get("/static/app.js").text  # no CDN
    docs = client.get("/docs")  # Swagger UI from the package, not from a CDN: works offline
    assert docs.status_code == 200 and "https://" not in docs.text
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/redoc").status_code == 404  # ReDoc's bundle fetches its logo from a CDN
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/query", "/query/batch", "/items/{row}", "/items/{row}/thumbnail", "/stats"} <= set(
        paths
    )


def test_every_answer_has_a_schema_and_real_answers_fit_it(client):
    """OpenAPI documents each 200 (ReDoc and Swagger showed `{ }`), and the answers match it."""
    spec = client.get("/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            ok = operation["responses"]["200"]["content"]
            assert any("schema" in v and v["schema"] for v in ok.values()) or path.endswith(
                ("/thumbnail", "/image")
            ), (method, path, ok)
            assert "ErrorAnswer" in str(operation["responses"].get("400", {})), (method, path)
    answers = TypeAdapter(list[QueryAnswer])
    answers.validate_python(client.post("/query?top=5", json={"row": 3}).json())
    answers.validate_python(client.post("/query/batch?top=5", json={"rows": [1, 2]}).json())
    Item.model_validate(client.get("/items/3").json())
    ItemsPage.model_validate(client.get("/items?limit=3").json())
    Stats.model_validate(client.get("/stats").json())


def test_browse_the_collection_in_pages_newest_first_or_by_folder(workspace, client):
    ws, _, files, _ = workspace
    stored = [f.relative_to(ws / "images").as_posix() for f in files]
    for order, expected in {
        "row": list(range(len(files))),
        "folder": sorted(range(len(files)), key=stored.__getitem__),
        "newest": sorted(range(len(files)), key=lambda i: (-files[i].stat().st_mtime, i)),
    }.items():
        pages = [
            client.get(f"/items?order={order}&offset={o}&limit=10").json() for o in (0, 10, 20)
        ]
        assert [p["total"] for p in pages] == [24] * 3 and [len(p["items"]) for p in pages] == [
            10,
            10,
            4,
        ]
        rows = [item["row"] for p in pages for item in p["items"]]
        assert rows == expected, order
        assert all(item["path"] == stored[item["row"]] for p in pages for item in p["items"])
    _error(client.get("/items?order=random"), 422, "order")
    _error(client.get("/items?limit=0"), 422, "limit")


def test_the_full_size_view_is_the_image_at_most_2048_px(tmp_path):
    """A 3000 x 1000 photo: thumbnail 256 px wide, the view 2048 px, both JPEG (never the file).

    The model lies beside the store (as `tbh duplicates` keeps NAME.onnx by NAME.zarr), not in
    onnx/: the service finds it without --model (it did not)."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1000, 3000, 3), dtype=np.uint8)).save(images / "w.png")
    make_images(images, {"x": 2})
    model = export(make_lsh_run(tmp_path / "runs" / "r", bits=16), out=tmp_path / "m.onnx")
    index(images, store=tmp_path / "codes.zarr", model=model, workers=0, device="cpu")
    service = SearchService(tmp_path / "codes.zarr", device="cpu", threads=1)
    with TestClient(create_app(service)) as c:
        row = next(
            i["row"] for i in c.get("/items?order=row").json()["items"] if i["path"] == "w.png"
        )
        assert c.get(f"/items/{row}").json()["width"] == 3000
        for path, side in ((f"/items/{row}/thumbnail", 256), (f"/items/{row}/image", 2048)):
            answer = c.get(path)
            assert answer.headers["content-type"] == "image/jpeg"
            with Image.open(io.BytesIO(answer.content)) as shown:
                assert shown.size == (side, round(side / 3))


# ---- bad input: a 4xx with a JSON error, never a 500 ----------------------------------------


def _bomb(side: int) -> bytes:
    """A PNG of side x side 1-bit pixels: a few kB on the wire, side^2 pixels decoded."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


def _ppm() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PPM")  # Pillow reads it; uploads may not be it
    return buf.getvalue()


@pytest.mark.parametrize(
    ("files", "status", "pattern"),
    [
        (
            [("image", ("a.png", b"not an image", "image/png"))],
            422,
            r"^cannot decode image a\.png: not an image file tbh can read",
        ),
        ([("image", ("e.png", b"", "image/png"))], 422, "cannot decode"),
        ([("image", ("p.png", _ppm(), "image/png"))], 422, "p.png: not an image file"),
        ([("image", ("b.png", _bomb(8000), "image/png"))], 422, "8000 x 8000 pixels, more than"),
        ([("image", ("c.png", _bomb(14000), "image/png"))], 422, "decompression bomb"),
        ([("other", ("a.png", b"x", "image/png"))], 400, "field named 'image'"),
        ([("image", ("big.png", b"0" * (2 << 20), "image/png"))], 413, "larger than"),
    ],
)
def test_bad_uploads(client, files, status, pattern):
    response = client.post("/query", files=files)
    _error(response, status, pattern)
    assert "BytesIO" not in response.text  # the client's file is named, never a Python object


def test_body_over_the_limit_without_a_length_is_refused_while_it_streams(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536  # 2.5 MiB, sent chunked (no Content-Length)

    response = client.post(
        "/query", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    _error(response, 413, "larger than 1,048,576 bytes")


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "pattern"),
    [
        ("post", "/query", {"codes": "zzzz"}, 400, "not a hex code"),
        ("post", "/query", {"codes": "abc"}, 400, "4 hex digits"),
        ("post", "/query", {"codes": "ab cd"}, 400, "4 hex digits"),
        ("post", "/query", {"row": 24}, 404, "no item 24"),
        ("post", "/query", {"row": -1}, 404, "no item -1"),
        ("post", "/query", {"row": "3"}, 422, "row"),
        ("post", "/query", {"row": 1, "codes": "abcd"}, 422, "exactly one"),
        ("post", "/query", {}, 422, "exactly one"),
        ("post", "/query", {"idd": 1}, 422, "idd"),
        ("post", "/query?top=0", {"row": 1}, 422, "top"),
        ("post", f"/query?top={MAX_TOP + 1}", {"row": 1}, 422, "top"),
        ("post", "/query?radius=-1", {"row": 1}, 422, "radius"),
        ("post", "/query?top=many", {"row": 1}, 422, "top"),
        ("post", "/query/batch", {"rows": []}, 400, "1 to 1000"),
        ("post", "/query/batch", {"rows": [0] * (MAX_BATCH + 1)}, 400, "1 to 1000"),
        ("post", "/query/batch", {"codes": ["abcd", "xyz"]}, 400, "4 hex digits"),
        ("post", "/query/batch", {"rows": [1, 99]}, 404, "no item 99"),
        ("post", "/query/batch", {"codes": "abcd"}, 422, "codes"),
        ("get", "/items/24", None, 404, "no item 24"),
        ("get", "/items/99999999999999999999", None, 404, "no item"),
        ("get", "/items/-3/thumbnail", None, 404, "no item -3"),
        ("get", "/items/abc", None, 422, "row"),
        ("get", "/nowhere", None, 404, "Not Found"),
        ("delete", "/items/1", None, 405, "Method Not Allowed"),
    ],
)
def test_bad_requests(client, method, url, body, status, pattern):
    kwargs = {} if body is None else {"json": body}
    _error(client.request(method.upper(), url, **kwargs), status, pattern)


def test_bad_bodies(client):
    _error(client.post("/query", content=b"{not json", headers=_json()), 422, "JSON")
    _error(client.post("/query", content=b"[1]", headers=_json()), 422, "")
    _error(client.post("/query", content=b"id=1", headers={"content-type": "text/plain"}), 415, "")
    _error(client.post("/query"), 415, "multipart")
    bad_length = {"content-type": "application/json", "content-length": "lots"}
    _error(client.post("/query", content=b"{}", headers=bad_length), 400, "Content-Length")


def _json() -> dict:
    return {"content-type": "application/json"}


# ---- safety: tokens, paths from the store ------------------------------------------------


def test_token_guards_the_api_but_not_health_page_or_docs(service):
    with TestClient(create_app(service, token=TOKEN)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = client.get("/stats", headers=headers)
            _error(response, 401, "Bearer")
            assert response.headers["www-authenticate"] == "Bearer"
        _error(client.post("/query", json={"row": 1}), 401, "token")
        _error(client.get("/items/1/thumbnail"), 401, "token")
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/stats", headers=good).json()["rows"] == 24
        assert client.post("/query", json={"row": 1}, headers=good).status_code == 200
        for url in ("/health", "/", "/static/app.js", "/docs", "/openapi.json"):
            assert client.get(url).status_code == 200


def test_loopback_server_refuses_other_host_names(service):
    """A web page that points its domain at 127.0.0.1 (DNS rebinding) must not read answers."""
    app = create_app(service, hosts=LOOPBACK_NAMES | {"127.0.0.1"})
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:80", "[::1]:8000"):
            assert client.get("/stats", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::1", ""):
            response = client.get("/stats", headers={"host": host})
            _error(response, 400, "answers only requests to 127.0.0.1, ::1, localhost")
        _error(client.get("/", headers={"host": "evil.example"}), 400, "answers only")


def test_thumbnails_come_only_from_inside_the_indexed_folder(workspace, tmp_path):
    ws = workspace[0]
    shutil.copytree(ws / "codes.zarr", tmp_path / "codes.zarr")
    (tmp_path / "images").symlink_to(ws / "images")  # the store's root is relative: ../images
    shutil.copytree(ws / "onnx", tmp_path / "onnx")
    secret = ws / "secret.png"  # beside the indexed folder, not in it
    shutil.copy(workspace[2][0], secret)
    (ws / "images" / "link.png").symlink_to(secret)
    hostile = ["../secret.png", str(secret), "link.png", "cat/../../secret.png", "a\x00b.png"]
    paths = zarr.open_array(tmp_path / "codes.zarr" / "paths", mode="r+")
    paths[: len(hostile)] = np.array(hostile, dtype=object)
    write_checksums(zarr.open_group(tmp_path / "codes.zarr", mode="r+"))  # a hostile, whole store
    service = SearchService(tmp_path / "codes.zarr", device="cpu")
    with TestClient(create_app(service)) as client:
        for i in range(len(hostile)):
            _error(client.get(f"/items/{i}/thumbnail"), 404, "not inside the indexed folder")
        assert client.get(f"/items/{len(hostile)}/thumbnail").status_code == 200
        (ws / "images" / "link.png").unlink()


def test_rows_committed_while_serving_are_found_without_a_restart(workspace, tmp_path):
    ws, run, files, _ = workspace
    shutil.copytree(ws / "codes.zarr", tmp_path / "codes.zarr")
    (tmp_path / "images").symlink_to(ws / "images")  # the store's root is relative: ../images
    shutil.copytree(ws / "onnx", tmp_path / "onnx")
    service = SearchService(tmp_path / "codes.zarr", device="cpu")
    with TestClient(create_app(service)) as client:
        assert client.get("/stats").json()["rows"] == 24
        _error(client.get("/items/24"), 404, "no item 24")
        db = open_store(tmp_path / "codes.zarr")
        attrs = {k: db.attrs[k] for k in ("bits", "model_sha256", "model", "backbone")}
        code = np.full((1, 2), 0xFF, np.uint8)  # a code no tiny image has
        with StoreLock(tmp_path / "codes.zarr"):
            writer = open_writer(
                tmp_path / "codes.zarr", image_size=32, root=ws / "images", **attrs
            )
            writer.append(code, ["dog/img000.png"], writer.label_ids(["dog"]))
        assert client.get("/stats").json()["rows"] == 25
        assert client.get("/items/24").json()["code"] == "ffff"
        found = client.post("/query?top=1", json={"codes": "ffff"}).json()[0]["neighbours"]
        assert found[0] == {"rank": 1, "distance": 0, "row": 24, "path": "dog/img000.png",
                            "label": "dog"}  # fmt: skip
        # rows rewritten in place (not appended) are read again, not patched
        zarr.open_array(tmp_path / "codes.zarr" / "paths", mode="r+")[24] = "dog/img001.png"
        group = zarr.open_group(tmp_path / "codes.zarr", mode="r+")
        write_checksums(group)  # (as a writer that rewrites rows records them)
        group.attrs["updated"] = "later"
        assert client.get("/items/24").json()["path"] == "dog/img001.png"


def test_queries_while_rows_are_committed_see_a_consistent_growing_store(workspace, tmp_path):
    ws = workspace[0]
    shutil.copytree(ws / "codes.zarr", tmp_path / "codes.zarr")
    (tmp_path / "images").symlink_to(ws / "images")  # the store's root is relative: ../images
    shutil.copytree(ws / "onnx", tmp_path / "onnx")
    service = SearchService(tmp_path / "codes.zarr", device="cpu", threads=1)
    db = open_store(tmp_path / "codes.zarr")
    attrs = {k: db.attrs[k] for k in ("bits", "model_sha256", "model", "backbone")}
    done, failures = threading.Event(), []
    seen: list[list[int]] = [[], [], []]  # rows each reader saw, in order

    def reader(mine: list[int]) -> None:
        try:
            while True:  # at least once, and once more after the last commit
                finished = done.is_set()
                rows = service.stats()["rows"]
                mine.append(rows)
                (result,) = service.by_rows([rows - 1], top=3)
                assert result.ids[0] <= rows - 1 and result.distances[0] == 0
                service.by_codes(["ffff"], top=1)
                if finished:
                    break
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(mine,)) for mine in seen]
    for t in threads:
        t.start()
    with StoreLock(tmp_path / "codes.zarr"):
        writer = open_writer(tmp_path / "codes.zarr", image_size=32, root=ws / "images", **attrs)
        for i in range(10):
            code = np.array([[0xFF, i]], np.uint8)
            writer.append(code, [f"cat/img{i:03d}.png"], writer.label_ids(["cat"]))
    done.set()
    for t in threads:
        t.join()
    assert not failures, failures
    for mine in seen:  # never a row count that goes back, never one beyond the commits
        assert mine == sorted(mine) and mine[0] >= 24 and mine[-1] == 34
    assert service.stats()["rows"] == 34
    (result,) = service.by_codes(["ff09"], top=1)
    assert result.ids.tolist() == [33] and result.paths == ["cat/img009.png"]


# ---- the command ------------------------------------------------------------------------------


def test_cli_refuses_unsafe_or_impossible_settings(workspace, monkeypatch, tmp_path):
    monkeypatch.chdir(workspace[0])
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    cases = [
        (["--host", "0.0.0.0"], "--token-file"),
        (["--host", "example.org"], "--insecure"),
        (["--token-file", str(short)], "at least 16 characters"),
        (["--token-file", str(tmp_path / "none.txt")], "cannot read the token file"),
        (["--store", str(tmp_path / "no.zarr")], "no code store"),
        (["--port", "70000"], "--port must be 0 to 65535"),
        (["--max-upload-mb", "0"], "must be positive"),
    ]
    for args, pattern in cases:
        result = CliRunner().invoke(cli, ["serve", "--device", "cpu", "--port", "0", *args])
        assert result.exit_code == 1, (args, result.output)
        assert pattern in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_cli_serves_over_http_and_stops_on_interrupt(workspace, tmp_path):
    token = tmp_path / "token.txt"
    token.write_text(TOKEN + "\n")
    with running_server(workspace[0], "--device", "cpu", "--token-file", str(token)) as (url, log):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.post(url + "query", json={"row": 3}, headers=headers, timeout=30)
        assert answer.status_code == 200 and answer.json()[0]["neighbours"][0]["distance"] == 0
        assert httpx.get(url + "stats", timeout=30).status_code == 401
        port = url.rsplit(":", 1)[1].strip("/")
        second = subprocess.run(  # the same port again: one line, exit 1
            serve_command("--port", port),
            cwd=workspace[0],
            env=serve_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1 and "cannot listen on 127.0.0.1" in second.stderr
    assert log == ["tbh serve: stopped"]
