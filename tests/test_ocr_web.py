"""The search page shows text found in images: the query's words outlined on the thumbnail and the
matching line under it (headless Chromium, as tests/test_web_page.py)."""

from __future__ import annotations

import pytest

from conftest import run_index
from live_server import LiveServer
from test_ocr import FONTS, folder_of_signs
from test_web_page import ARGS, CHROMIUM, run_search, shot

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)"),
    pytest.mark.skipif(not FONTS, reason="needs the Debian font packages fonts-dejavu-core and fonts-liberation"),
]


def test_page_outlines_the_matched_words_on_the_thumbnail(tmp_path, tiny_encoder):
    from playwright.sync_api import sync_playwright

    from mmsearch.api import create_app
    from mmsearch.config import Settings
    from mmsearch.search import Searcher

    run_index(folder_of_signs(tmp_path / "signs"), tmp_path / "index", tiny_encoder, ocr=True)
    searcher = Searcher(tmp_path / "index", tiny_encoder)
    with LiveServer(create_app(Settings(index_dir=tmp_path / "index"), searcher=searcher)) as live, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(live.url + "/")
        page.check("input[name=mode][value=keyword]")
        page.fill("#q", "museum entrance")
        run_search(page, lambda: page.click("#search-btn"))
        page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
        first = page.query_selector(".card")
        outlined = first.eval_on_selector_all("svg.ocr-boxes rect", "rs => rs.map(r => r.dataset.word.toLowerCase())")
        assert sorted(outlined) == ["entrance", "museum"]
        assert "museum" in first.query_selector(".ocr-snippet").text_content().lower()
        thumb = first.query_selector(".thumb").bounding_box()
        for rect in first.query_selector_all("svg.ocr-boxes rect"):
            box = rect.bounding_box()  # drawn inside the thumbnail, not collapsed to a point
            assert box["width"] > 2 and box["height"] > 2
            assert thumb["x"] <= box["x"] and box["x"] + box["width"] <= thumb["x"] + thumb["width"] + 1
        shot(page, "ocr-highlight")
        assert errors == []
        browser.close()
