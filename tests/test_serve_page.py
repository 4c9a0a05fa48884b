"""The page of `tbh serve` in a real browser: Playwright driving Debian's Chromium (no download).

Skipped where /usr/bin/chromium is absent (`apt-get install chromium`). The screenshot is kept in
the test's tmp folder, and also written to $TBH_SERVE_SCREENSHOT when that is set.
"""

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tbhcli.apps.demo_data import write_mnist_images
from tbhcli.deploy.export import export
from tbhcli.indexing.index import index
from tests.servers import running_server
from tests.tiny_workspace import make_lsh_run

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="needs Debian's Chromium at /usr/bin/chromium"
)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """300 demo digits (290 indexed, 10 queries) on the tiny backbone with 32-bit LSH codes."""
    ws = tmp_path_factory.mktemp("page")
    images, queries = write_mnist_images(ws, n_queries=10, n=300)
    model = export(make_lsh_run(ws / "runs" / "lsh32", bits=32), out=ws / "onnx" / "lsh32.onnx")
    index(images, store=ws / "codes.zarr", model=model, workers=0, device="cpu")
    return ws, sorted(queries.rglob("*.png"))


def shown(results) -> list[int]:
    """The store rows of the result figures on the page, in order."""
    return [int(i) for i in results.evaluate_all("figures => figures.map(f => f.dataset.row)")]


def api(url: str, **body) -> list[int]:
    """The rows `POST /query?top=24` answers."""
    answer = httpx.post(url + "query?top=24", timeout=60, **body).json()
    return [n["row"] for n in answer[0]["neighbours"]]


@pytest.mark.slow
def test_upload_a_digit_see_results_click_one_see_its_neighbours(digits, tmp_path):
    ws, queries = digits
    with (
        running_server(ws, "--device", "cpu") as (url, _),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        expect(page.locator("#stats")).to_contain_text("290 images · 32 bits")

        page.set_input_files("#file", str(queries[0]))
        results = page.locator("#results figure.result")
        expect(page.locator("#status")).to_contain_text(f"24 results for {queries[0].name}")
        assert results.count() == 24  # the page's default top
        expect(results.nth(4).locator("img")).to_have_attribute("src", re.compile("^blob:"))
        upload = {"image": (queries[0].name, queries[0].read_bytes(), "image/png")}
        assert shown(results) == api(url, files=upload)  # the page shows what the API answers

        clicked = results.nth(3)
        item = int(clicked.get_attribute("data-row"))
        clicked.click()
        expect(page.locator("#query-caption")).to_contain_text(f"item {item}")
        expect(page.locator("#status")).to_contain_text("24 results for ")
        first = results.first.locator("figcaption")
        expect(first).to_contain_text("d=0")  # the clicked image finds itself (or a twin) first
        assert shown(results) == api(url, json={"row": item})

        page.locator("#radius").fill("6")  # the slider: only neighbours within 6 bits
        expect(page.locator("#radius-value")).to_have_text("6")
        page.locator("#radius").dispatch_event("change")
        expect(page.locator("#status")).to_contain_text("results for")
        distances = [
            int(re.search(r"d=(\d+)", text)[1])
            for text in results.locator("figcaption").all_inner_texts()
        ]
        assert distances and max(distances) <= 6 and distances == sorted(distances)

        page.wait_for_function(
            "[...document.querySelectorAll('#results img')].every(i => i.complete)"
        )
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=False)

        page.goto(url + "docs")  # Swagger UI, from the package (no network here)
        expect(page.locator("#swagger-ui")).to_contain_text("POST/query/batch")
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("TBH_SERVE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["TBH_SERVE_SCREENSHOT"])


@pytest.mark.slow
def test_the_page_asks_for_the_token_of_a_guarded_server(digits, tmp_path):
    ws, queries = digits
    token = "page-token-0123456789"
    (tmp_path / "token.txt").write_text(token)
    guarded = ("--device", "cpu", "--token-file", str(tmp_path / "token.txt"))
    with running_server(ws, *guarded) as (url, _), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        expect(page.locator("#stats")).to_contain_text("token")  # the 401's message
        expect(page.locator("#token-form")).to_be_visible()
        page.locator("#token").fill(token)
        page.locator("#token-form button").click()
        expect(page.locator("#stats")).to_contain_text("290 images")
        page.set_input_files("#file", str(queries[1]))
        expect(page.locator("#status")).to_contain_text(f"24 results for {queries[1].name}")
        first = page.locator("#results figure.result img").first
        expect(first).to_have_attribute("src", re.compile("^blob:"))  # fetched with the token
        browser.close()
