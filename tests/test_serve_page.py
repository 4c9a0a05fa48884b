"""The page of `tbh serve` in a real browser: Playwright driving Debian's Chromium (no download).

Every page runs offline and is checked to be (`tests/browsers.py`: a request leaving the machine
fails the test). Without /usr/bin/chromium these tests skip, except under CI=true, where they fail.
Screenshots are kept in each test's tmp folder, and copied into $TBH_SCREENSHOTS (a folder, such
as docs/img) when that is set.
"""

import os
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tbhcli.apps.demo_data import write_mnist_images
from tbhcli.deploy.export import export
from tbhcli.indexing.index import index
from tests import browsers
from tests.browsers import chromium_path, is_local, offline_page
from tests.byo_models import build_clip_text_workspace
from tests.servers import running_server
from tests.tiny_workspace import make_lsh_run


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """300 demo digits (290 indexed, 10 queries) on the tiny backbone with 32-bit LSH codes."""
    chromium_path()  # skip (or fail under CI=true) before building anything
    ws = tmp_path_factory.mktemp("page")
    images, queries = write_mnist_images(ws, n_queries=10, n=300)
    model = export(make_lsh_run(ws / "runs" / "lsh32", bits=32), out=ws / "onnx" / "lsh32.onnx")
    index(images, store=ws / "codes.zarr", model=model, workers=0, device="cpu")
    return ws, sorted(queries.rglob("*.png"))


def shown(results) -> list[int]:
    """The store rows of the pictures in the page's grid, in order."""
    return [int(i) for i in results.evaluate_all("figures => figures.map(f => f.dataset.row)")]


def api(url: str, top: int = 24, radius: int | None = None, **body) -> list[dict]:
    """The neighbours `POST /query` answers for one query."""
    params = {"top": top} | ({} if radius is None else {"radius": radius})
    answer = httpx.post(url + "query", params=params, timeout=60, **body).json()
    return answer[0]["neighbours"]


def settled(page) -> None:
    """Wait until the page shows the answer for its URL (not the previous one's pictures)."""
    shows = "?" + urlsplit(page.url).query if urlsplit(page.url).query else ""
    expect(page.locator("#results")).to_have_attribute("data-shows", shows)


def url_state(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


# Every picture of the grid (and of an open full-size view) has arrived, or is marked unreadable
# (an <img> without a src counts as `complete`: the blob may still be on its way).
LOADED = """[...document.querySelectorAll('#results img, #view[open] img')].every(
    i => i.classList.contains('unreadable') || (i.getAttribute('src') && i.complete
    && i.naturalWidth > 0))"""


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """A screenshot once every picture has loaded, kept in tmp_path (and in $TBH_SCREENSHOTS)."""
    page.wait_for_function(LOADED)
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if folder := os.environ.get("TBH_SCREENSHOTS"):
        shutil.copyfile(shot, Path(folder) / shot.name)
    return shot


def as_upload(path: Path) -> dict:
    return {"image": (path.name, path.read_bytes(), "image/png")}


def upload(page, path: Path) -> None:
    page.set_input_files("#file", str(path))


def test_a_missing_browser_skips_here_and_fails_under_ci(monkeypatch, tmp_path):
    """On a user's machine the page tests skip with the reason; in CI (CI=true) they fail."""
    monkeypatch.setattr(browsers, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs Debian's Chromium"):
        browsers.chromium_path()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: the browser tests must run"):
        browsers.chromium_path()


def test_the_guard_fails_a_page_that_asks_the_internet():
    """The offline check itself: a page with one CDN picture fails it."""
    assert is_local("http://127.0.0.1:8000/x") and is_local("blob:http://localhost/1")
    assert not is_local("https://cdn.redoc.ly/redoc/logo-mini.svg")
    outside = r"off this machine: \['https://cdn\.example/"
    with pytest.raises(AssertionError, match=outside), offline_page() as page:
        page.set_content('<img src="https://cdn.example/logo.svg">')
        page.wait_for_load_state("networkidle")


@pytest.mark.slow
def test_browse_the_collection_in_pages_and_by_folder(digits, tmp_path):
    ws, _ = digits
    with running_server(ws, "--device", "cpu") as (url, _), offline_page() as page:
        page.goto(url)
        expect(page.locator("#stats")).to_contain_text("290 images · 32 bits")
        expect(page.locator("#status")).to_contain_text("290 images · showing 1–60")
        settled(page)
        grid = page.locator("#results figure.result")
        expect(grid).to_have_count(60)
        newest = httpx.get(url + "items", params={"limit": 500}).json()["items"]
        assert shown(grid) == [i["row"] for i in newest[:60]]  # newest first, as the API says
        expect(grid.nth(7).locator("img")).to_have_attribute("src", re.compile("^blob:"))
        screenshot(page, tmp_path, "serve-browse")

        page.locator("#next").click()
        settled(page)
        expect(page.locator("#page-info")).to_have_text("page 2 of 5")
        assert url_state(page) == {"order": "newest", "page": "2"}
        expect(grid.first).to_have_attribute("data-row", str(newest[60]["row"]))
        assert shown(grid) == [i["row"] for i in newest[60:120]]
        page.go_back()  # the back button returns to page 1
        settled(page)
        expect(page.locator("#page-info")).to_have_text("page 1 of 5")
        expect(grid.first).to_have_attribute("data-row", str(newest[0]["row"]))

        page.select_option("#order", "folder")
        settled(page)
        expect(page.locator("#results h2.folder").first).to_have_text("0")  # digit folders
        by_path = sorted(newest, key=lambda i: i["path"])
        expect(grid.first).to_have_attribute("data-row", str(by_path[0]["row"]))
        assert shown(grid) == [i["row"] for i in by_path[:60]]

        page.goto(url + "?order=row&page=9")  # a link past the end says so
        settled(page)
        expect(page.locator("#status")).to_have_text("there is no page 9: the collection has 5.")
        expect(grid).to_have_count(0)


@pytest.mark.slow
def test_query_view_full_size_search_from_it_and_share_the_link(digits, tmp_path):
    ws, queries = digits
    with running_server(ws, "--device", "cpu") as (url, _), offline_page() as page:
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("showing 1–60")
        upload(page, queries[0])
        results = page.locator("#results figure.result")
        expect(page.locator("#status")).to_contain_text(f"24 results for {queries[0].name}")
        settled(page)
        assert url_state(page) == {"upload": queries[0].name, "top": "24"}
        answer = api(url, files=as_upload(queries[0]))
        assert shown(results) == [n["row"] for n in answer]  # the page shows what the API answers
        screenshot(page, tmp_path, "serve-query")

        results.nth(3).click()  # the full-size view: picture, path, size, label, distance
        view = page.locator("#view")
        expect(view).to_be_visible()
        chosen = answer[3]
        facts = page.locator("#view-facts")
        expect(facts).to_contain_text(chosen["path"])
        expect(facts).to_contain_text("28 × 28 px")
        expect(facts).to_contain_text(f"label{chosen['label']}")
        expect(facts).to_contain_text(f"distance{chosen['distance']} of 32 bits")
        expect(page.locator("#view-image")).to_have_attribute("src", re.compile("^blob:"))
        screenshot(page, tmp_path, "serve-view")

        page.locator("#similar").click()  # search from it: the URL names the row
        settled(page)
        expect(view).to_be_hidden()
        expect(page.locator("#query-caption")).to_contain_text(f"item {chosen['row']}")
        assert url_state(page) == {"row": str(chosen["row"]), "top": "24"}
        expect(results.first.locator("figcaption")).to_contain_text("d=0")
        by_row = [n["row"] for n in api(url, json={"row": chosen["row"]})]
        expect(results.first).to_have_attribute("data-row", str(by_row[0]))
        assert shown(results) == by_row

        page.locator("#radius").fill("6")  # the slider: only neighbours within 6 bits
        expect(page.locator("#radius-value")).to_have_text("6")
        page.locator("#radius").dispatch_event("change")
        settled(page)
        expect(page).to_have_url(re.compile("radius=6"))
        within = [n["row"] for n in api(url, radius=6, json={"row": chosen["row"]})]
        expect(results).to_have_count(len(within))
        assert shown(results) == within
        shared = page.url

        page.go_back()  # back: the neighbours at any distance again
        settled(page)
        expect(results).to_have_count(24)
        page.go_back()  # back again: the uploaded query, still in this tab
        settled(page)
        expect(page.locator("#status")).to_contain_text(f"24 results for {queries[0].name}")

        page.goto(shared)  # a shared link opens the same search
        settled(page)
        expect(page.locator("#radius-value")).to_have_text("6")
        expect(results).to_have_count(len(within))
        assert shown(results) == within


@pytest.mark.slow
def test_a_radius_that_hides_everything_says_so_and_errors_are_words(digits, tmp_path):
    ws, queries = digits
    with running_server(ws, "--device", "cpu") as (url, _), offline_page() as page:
        nearest, far = max(
            (
                api(url, top=1, files={"image": (q.name, q.read_bytes(), "image/png")})[0][
                    "distance"
                ],
                q,
            )
            for q in queries
        )
        assert nearest > 0  # a query with no exact twin in the store: some radius hides all
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("showing 1–60")
        page.locator("#radius").fill(str(nearest - 1))
        upload(page, far)
        expect(page.locator("#status")).to_contain_text(f"0 results for {far.name}")
        hint = page.locator("#hint")
        expect(hint).to_be_visible()
        expect(hint).to_contain_text(f"within distance {nearest - 1}")
        expect(hint).to_contain_text(f"the nearest is at distance {nearest}")
        screenshot(page, tmp_path, "serve-radius-hint")
        page.locator("#widen").click()
        settled(page)
        expect(hint).to_be_hidden()
        results = page.locator("#results figure.result")
        expect(results.first.locator("figcaption")).to_contain_text(f"d={nearest}")
        assert url_state(page)["radius"] == str(nearest)

        notes = tmp_path / "notes.txt"
        notes.write_text("not a picture")
        upload(page, notes)
        status = page.locator("#status")
        expect(status).to_have_class("error")
        expect(status).to_have_text(
            "cannot decode image notes.txt: not an image file tbh can read "
            "(such as JPEG, PNG, WebP, GIF, BMP, TIFF)."
        )

        page.goto(url + "docs")  # Swagger UI, from the package: no request leaves the machine
        expect(page.locator("#swagger-ui")).to_contain_text("GET/items")
        page.locator("#operations-default-stats_stats_get").click()
        expect(page.locator("#swagger-ui")).to_contain_text("model_sha256")  # a response schema


@pytest.mark.slow
def test_the_page_asks_for_the_token_of_a_guarded_server(digits, tmp_path):
    ws, queries = digits
    token = "page-token-0123456789"
    (tmp_path / "token.txt").write_text(token)
    guarded = ("--device", "cpu", "--token-file", str(tmp_path / "token.txt"))
    with running_server(ws, *guarded) as (url, _), offline_page() as page:
        page.goto(url)
        expect(page.locator("#stats")).to_contain_text("token")  # the 401's message
        expect(page.locator("#token-form")).to_be_visible()
        page.locator("#token").fill(token)
        page.locator("#token-form button").click()
        expect(page.locator("#stats")).to_contain_text("290 images")
        expect(page.locator("#results figure.result")).to_have_count(60)
        upload(page, queries[1])
        expect(page.locator("#status")).to_contain_text(f"24 results for {queries[1].name}")
        first = page.locator("#results figure.result img").first
        expect(first).to_have_attribute("src", re.compile("^blob:"))  # fetched with the token


@pytest.mark.slow
def test_a_text_box_searches_a_clip_run_by_description(tmp_path_factory, tmp_path):
    """The page offers text queries when /stats says so, and shows what `POST /query` answers."""
    pytest.importorskip("open_clip")
    chromium_path()
    ws = tmp_path_factory.mktemp("text-page")
    build_clip_text_workspace(ws)
    text = "a red bicycle"
    with running_server(ws, "--device", "cpu") as (url, _), offline_page() as page:
        page.goto(url)
        settled(page)
        form = page.locator("#text-form")
        expect(form).to_be_visible()
        page.locator("#text").fill(text)
        page.locator("#text-form button").click()
        expect(page.locator("#status")).to_contain_text(f"24 results for {text}")
        settled(page)
        assert url_state(page) == {"text": text, "top": "24"}
        expect(page.locator("#query-caption")).to_have_text(f"query: “{text}”")
        results = page.locator("#results figure.result")
        assert shown(results) == [n["row"] for n in api(url, json={"text": text})]
        screenshot(page, tmp_path, "serve-text")
        page.reload()  # the link alone repeats the search
        settled(page)
        assert shown(results) == [n["row"] for n in api(url, json={"text": text})]


def test_the_text_box_is_hidden_without_a_text_model(digits):
    ws, _ = digits
    with running_server(ws, "--device", "cpu") as (url, _), offline_page() as page:
        page.goto(url)
        expect(page.locator("#stats")).to_contain_text("290 images")
        settled(page)
        expect(page.locator("#text-form")).to_be_hidden()


@pytest.mark.slow
def test_real_photos_browse_by_folder_and_open_full_size(tmp_path_factory, tmp_path):
    """Photos tbh did not make (the ones scikit-image ships, up to 1411 x 1411 px): every picture
    arrives, and the full-size view names the largest photo's true size."""
    skimage = pytest.importorskip("skimage", reason="scikit-image (the bench extra) ships them")
    chromium_path()
    ws = tmp_path_factory.mktemp("photos")
    data = Path(skimage.__file__).parent / "data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "horse.png", "rocket.jpg",
             "motorcycle_left.png", "camera.png", "coins.png", "hubble_deep_field.jpg",
             "retina.jpg", "grass.png", "brick.png"]  # fmt: skip
    for name in names:
        folder = ws / "images" / ("scenes" if name < "d" else "more")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / name, folder / name)
    model = export(make_lsh_run(ws / "runs" / "lsh32", bits=32), out=ws / "onnx" / "lsh32.onnx")
    index(ws / "images", store=ws / "codes.zarr", model=model, workers=0, device="cpu")
    with running_server(ws, "--device", "cpu") as (url, _), offline_page() as page:
        page.goto(url + "?order=folder")
        settled(page)
        expect(page.locator("#results figure.result")).to_have_count(len(names))
        expect(page.locator("#results h2.folder")).to_have_text(["more", "scenes"])
        page.wait_for_function(LOADED)
        unreadable = page.locator("#results img.unreadable")
        assert unreadable.count() == 0
        screenshot(page, tmp_path, "serve-photos")
        items = httpx.get(url + "items", params={"limit": 100}).json()["items"]
        sizes = {i["row"]: httpx.get(url + f"items/{i['row']}").json() for i in items}
        largest = max(sizes.values(), key=lambda i: i["width"] * i["height"])
        page.locator(f"#results figure[data-row='{largest['row']}']").click()
        facts = page.locator("#view-facts")
        expect(facts).to_contain_text(f"{largest['width']} × {largest['height']} px")
        expect(facts).to_contain_text(largest["path"])
        screenshot(page, tmp_path, "serve-photo-view")
