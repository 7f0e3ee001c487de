"""The search page's duplicates view in headless Chromium: each group in a row, the best copy first."""

from __future__ import annotations

import pytest

from bench.duplicate_photos import make_duplicate_set
from conftest import run_index
from live_server import LiveServer
from mmsearch.api import create_app
from mmsearch.config import Settings
from mmsearch.search import Searcher
from test_web_page import ARGS, CHROMIUM, shot

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")


def test_duplicates_view_shows_groups_best_copy_first(tmp_path, tiny_encoder):
    from playwright.sync_api import sync_playwright

    photos = make_duplicate_set(tmp_path / "photos", originals=2, unrelated=4, size=(320, 240))
    index_dir = tmp_path / "index"
    run_index(tmp_path / "photos", index_dir, tiny_encoder)
    app = create_app(Settings(index_dir=index_dir), searcher=Searcher(index_dir, tiny_encoder))
    with LiveServer(app) as live, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(live.url + "/")
            page.click("#dup-open")
            page.wait_for_selector(".dup-group")
            rows = page.eval_on_selector_all(".dup-group", """els => els.map(g => [...g.querySelectorAll('.dup-copy')].map(c => ({
                best: c.classList.contains('best'), name: c.querySelector('.dup-name').title,
                loaded: c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0})))""")
            assert sorted([c["name"] for c in row] for row in rows) == sorted([a, b] for a, b in photos.pairs)
            assert all(row[0]["best"] and not row[1]["best"] for row in rows)  # the original (larger) first
            assert page.text_content("#dup-status").startswith("2 groups of near-identical images among 8")
            assert page.eval_on_selector("#results", "e => e.hidden")
            shot(page, "duplicates")
            page.fill("#dup-threshold", "0.9999")
            page.dispatch_event("#dup-threshold", "change")
            page.wait_for_function("() => document.getElementById('dup-status').textContent.startsWith('No near-duplicates')")
            page.click("#dup-close")
            assert not page.eval_on_selector("#results", "e => e.hidden") and page.is_hidden("#duplicates")
            assert not errors, errors
        finally:
            browser.close()
