"""Debian's Chromium driven by Playwright for the page tests: offline, and proven offline.

`chromium_path()` is /usr/bin/chromium, or a skip with the reason on a user's machine without it;
under `CI=true` (set by .ci/run) a missing browser fails the test instead: CI must drive the page.
`offline_page()` opens a page whose every request leaving this machine is aborted and recorded;
leaving the block asserts there were none (a CDN logo, a font, an analytics ping all fail it).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Headless, and none of the browser's own calls home (this machine may have no network at all).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> Path:
    """The browser the page tests drive; skips (or, under CI=true, fails) when it is missing."""
    if CHROMIUM.is_file():
        return CHROMIUM
    reason = f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: the browser tests must run; {reason}", pytrace=False)
    pytest.skip(reason)


def is_local(url: str) -> bool:
    """Whether a request stays on this machine (loopback, a local file, or a page's own
    blob:/data: URL)."""
    parts = urlsplit(url)
    return parts.scheme in {"blob", "data", "about", "file"} or parts.hostname in LOCAL_HOSTS


@contextmanager
def offline_page(viewport: dict | None = None) -> Iterator:
    """A Playwright page in headless Chromium; requests off this machine are aborted and fail."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    left: list[str] = []

    def guard(route) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
            context.route("**/*", guard)
            yield context.new_page()
        finally:
            browser.close()
    assert not left, f"the page asked for {len(left)} resource(s) off this machine: {left}"
