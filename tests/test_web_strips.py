"""The search page shows pictures and texts in two strips (mmsearch/web/static/strips.js): a text hit is
a text card with its words, never an empty "no image" box. Headless Chromium as in test_web_page.py."""

from __future__ import annotations

import pytest

from conftest import make_corpus, run_index
from live_server import LiveServer
from test_web_page import ARGS, CHROMIUM, run_search, shot

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")


def test_pictures_and_texts_in_separate_strips(tmp_path, tiny_encoder):
    from playwright.sync_api import sync_playwright

    from mmsearch.api import create_app
    from mmsearch.config import Settings
    from mmsearch.search import Searcher

    files = make_corpus(tmp_path / "corpus")
    run_index(tmp_path / "corpus", tmp_path / "idx", tiny_encoder)
    searcher = Searcher(tmp_path / "idx", tiny_encoder)
    app = create_app(Settings(index_dir=tmp_path / "idx"), searcher=searcher)
    with LiveServer(app) as live, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(live.url + "/")
        page.fill("#q", "bread")
        page.check("#mode-vector")
        run_search(page, lambda: page.click("#search-btn"))
        pictures = page.eval_on_selector_all(".strip-pictures .card", "els => els.map(e => !!e.querySelector('.thumb img'))")
        texts = page.eval_on_selector_all(".strip-texts .card", """els => els.map(e => ({
            thumb: !!e.querySelector('.thumb'), excerpt: e.querySelector('.excerpt').textContent, title: e.querySelector('.title').textContent }))""")
        headings = page.eval_on_selector_all(".strip h2", "els => els.map(e => e.textContent)")
        placeholder = "no image" in page.text_content("#results")
        shot(page, "08-strips")
        browser.close()
    searcher.close()
    assert headings == [f"Pictures ({len(pictures)})", f"Texts ({len(texts)})"]
    assert len(pictures) == 6 and all(pictures)  # every indexed picture, each with its thumbnail
    assert len(texts) == 3 and not any(t["thumb"] for t in texts)
    assert {t["excerpt"] for t in texts} == {files[n].read_text(encoding="utf-8") for n in ("sea", "bread", "train")}
    assert {t["title"] for t in texts} == {"sea.txt", "bread.txt", "train.txt"}
    assert not placeholder and errors == []
