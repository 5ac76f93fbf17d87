"""The web page in a real headless Chromium: upload, drop or paste an image, pick one, read the
results; an empty drop zone before any query, and no text controls for image-only methods.

Needs Playwright's Python package and a Chromium binary (Debian: ``apt-get install chromium``;
another one via ``CHROMIUM=/path``); skipped when either is absent. With
``SEARCH_SCREENSHOT=docs/search.png`` the test also saves a screenshot of the results page.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api")

from playwright.sync_api import sync_playwright

from imsim.methods import create_method
from search.gallery import open_gallery
from search.index import build_index, load_index
from search.query import Searcher
from search.server import create_app
from tests.search.helpers import serving

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip("Chromium not installed (apt-get install chromium, or set CHROMIUM)")
    return path


# Drop (on the drop zone) or paste (on the page) a PNG given as base64, as a user would.
GIVE_FILE = """([how, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], "query.png", {type: "image/png"}));
  const event = how === "drop"
    ? new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true})
    : new ClipboardEvent("paste", {clipboardData: dt, bubbles: true, cancelable: true});
  (how === "drop" ? document.querySelector("#drop") : document).dispatchEvent(event);
}"""


def test_upload_and_pick_in_the_page(shapes_folder: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    build_index(
        open_gallery(str(shapes_folder)), tmp_path / "ix", create_method("pixels"), "pixels", {}
    )
    searcher = Searcher(load_index(tmp_path / "ix"))
    query = sorted(shapes_folder.rglob("*.png"))[20]
    key = query.relative_to(shapes_folder).as_posix()
    expected = searcher.search(searcher.query_vector(item=key), k=8)
    bad = tmp_path / "broken.png"
    bad.write_bytes(query.read_bytes()[:80])

    with serving(create_app(searcher)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 640})
            page.goto(url, timeout=15_000)
            page.wait_for_selector("body[data-ready='1']", timeout=15_000)
            assert "60 images indexed with pixels" in page.inner_text("#info")
            # before any query: an empty drop zone, not a broken image with its alt text
            assert page.is_hidden("#query-preview") and page.is_visible("#drop-hint")
            assert page.is_hidden("#text") and page.is_hidden("#weight")  # no text encoder

            # upload a gallery file: it comes back first with score 1, then its neighbours
            page.set_input_files("#file", str(query))
            page.fill("#k", "8")
            page.click("#go")
            page.wait_for_function("document.querySelectorAll('#results .card').length === 8")
            cards = page.query_selector_all("#results .card")
            got = [
                (
                    int(c.get_attribute("data-row")),
                    c.query_selector(".label").inner_text(),
                    c.query_selector(".score").inner_text(),
                )
                for c in cards
            ]
            assert [g[0] for g in got] == [h.row for h in expected]
            assert [g[1] for g in got] == [h.label for h in expected]
            assert got[0][2] == "#1 · 1.000"
            assert "8 results for uploaded image" in page.inner_text("#status")
            page.wait_for_function(
                "[...document.querySelectorAll('#results img')].every(i => i.naturalWidth > 0)"
            )
            if shot := os.environ.get("SEARCH_SCREENSHOT"):
                page.screenshot(path=shot, full_page=True)

            # a corrupt upload: the page shows the server's 400 message
            page.set_input_files("#file", str(bad))
            page.click("#go")
            page.wait_for_selector("#status.error")
            assert "error 400" in page.inner_text("#status")
            assert "corrupt" in page.inner_text("#status")

            # drop a gallery file on the drop zone, then paste another: each is the query
            for how, n in (("drop", 30), ("paste", 40)):
                path = sorted(shapes_folder.rglob("*.png"))[n]
                row = searcher.index.position(path.relative_to(shapes_folder).as_posix())
                page.evaluate(GIVE_FILE, [how, base64.b64encode(path.read_bytes()).decode()])
                assert page.is_visible("#query-preview") and page.is_hidden("#drop-hint")
                page.click("#go")
                page.wait_for_function(
                    f"document.querySelector('#results .card')?.dataset.row === '{row}'"
                )
                assert "uploaded image" in page.inner_text("#status")

            # pick a gallery image instead: it is its own best match
            page.click("#clear")
            assert page.is_hidden("#query-preview") and page.is_visible("#drop-hint")
            pick = page.query_selector("#picks img")
            row = int(pick.get_attribute("data-row"))
            pick.click()
            page.click("#go")
            page.wait_for_function(
                "document.querySelector('#status').textContent.includes('gallery image')"
            )
            assert page.query_selector("#results .card").get_attribute("data-row") == str(row)
        finally:
            browser.close()


def test_text_controls_show_for_a_text_method(tmp_path: Path, color_words: type) -> None:
    chromium = _chromium()
    from tests.search.helpers import save_png, solid

    for name, rgb in {"red": (250, 0, 0), "blue": (0, 0, 250)}.items():
        save_png(tmp_path / "g" / name / "0.png", solid(rgb))
    build_index(
        open_gallery(str(tmp_path / "g")), tmp_path / "ix", color_words(), "color-words", {}
    )
    with serving(create_app(Searcher(load_index(tmp_path / "ix")))) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url, timeout=15_000)
            page.wait_for_selector("body[data-ready='1']", timeout=15_000)
            assert page.is_visible("#text") and page.is_enabled("#text")
            assert page.is_visible("#weight") and page.is_hidden("#query-preview")
            page.fill("#text", "blue")
            page.click("#go")
            page.wait_for_selector("#results .card")
            assert page.inner_text("#results .card .label") == "blue"
        finally:
            browser.close()
