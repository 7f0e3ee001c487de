"""The search page in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright against a uvicorn server on 127.0.0.1. Screenshots go to test-artifacts/."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from catalogue_data import open_shop
from conftest import REPO
from live_server import LiveServer
from mmsearch.calibration import RAW

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
N_PRODUCTS = 30

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_encoder):
    searcher, app, products, catalogue = open_shop(tmp_path_factory.mktemp("webshop"), tiny_encoder, N_PRODUCTS)
    # The random-weight model's cross-modal cosines are noise, so standardising them (mmsearch.calibration)
    # would rank noise: this test is about the page, so the merge keeps raw cosines (the real model's merged
    # lists are tested in test_calibration.py).
    searcher.use_calibration(RAW)
    with LiveServer(app) as live:
        yield live.url, searcher, products, catalogue


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def run_search(page, action) -> None:
    """Do ``action`` and wait until the page has rendered the answer to the query it sends."""
    with page.expect_response(lambda r: r.url.endswith("/v1/query")):
        action()
    page.wait_for_function("() => document.getElementById('status').textContent !== 'Searching…'")


def cards(page) -> list[dict]:
    return page.eval_on_selector_all(".card", """els => els.map(e => ({
        product: e.dataset.product, title: e.querySelector('.title').textContent,
        price: e.querySelector('.price').textContent, score: e.querySelector('.score').textContent }))""")


def price_of(card: dict) -> float:
    return float(card["price"].split()[0])


def test_search_page_end_to_end(server, browser):
    base, searcher, products, catalogue = server
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base + "/")
    page.wait_for_selector("fieldset[data-field=price]")
    assert page.is_visible("fieldset[data-field=category]") and page.is_visible("#f-price-max")

    # 1. search by text
    page.fill("#q", "red leather handbag")
    run_search(page, lambda: page.click("#search-btn"))
    first_page = cards(page)
    assert len(first_page) == 12
    assert page.text_content("#status").startswith(f"Results 1–12 of {N_PRODUCTS}")
    assert all(re.match(r"score \d\.\d{4}", c["score"]) and c["price"].endswith("EUR") and c["title"] for c in first_page)
    assert len({c["product"] for c in first_page}) == 12
    page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
    shot(page, "01-text-search")

    # 2. page forward: the next twelve, none repeated
    run_search(page, lambda: page.click("#next"))
    second_page = cards(page)
    assert page.text_content("#status").startswith("Results 13–24")
    assert len(second_page) == 12 and not {c["product"] for c in second_page} & {c["product"] for c in first_page}
    assert page.is_enabled("#prev")
    shot(page, "02-page-two")

    # 3. search by an uploaded photo: the product it shows comes first
    target = products[7]
    photo = catalogue / target["refs"][0]
    page.fill("#q", "")
    run_search(page, lambda: page.set_input_files("#file", str(photo)))
    assert page.is_visible("#query-image")
    assert cards(page)[0]["product"] == target["sku"]
    shot(page, "03-image-search")

    # 3b. the same by drag and drop
    page.click("#clear-image")
    page.wait_for_selector("#query-image", state="hidden")
    other = products[11]
    data = base64.b64encode((catalogue / other["refs"][0]).read_bytes()).decode()
    transfer = page.evaluate_handle(
        """data => { const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                      const dt = new DataTransfer(); dt.items.add(new File([bytes], 'photo.png', {type: 'image/png'})); return dt; }""",
        data,
    )
    run_search(page, lambda: page.dispatch_event("#drop", "drop", {"dataTransfer": transfer}))
    assert cards(page)[0]["product"] == other["sku"]
    page.click("#clear-image")
    page.wait_for_selector("#query-image", state="hidden")

    # 4. a price filter: only products at or under 40 are shown, all of them
    page.fill("#q", "red leather handbag")
    run_search(page, lambda: page.click("#search-btn"))
    page.fill("#f-price-max", "40")
    run_search(page, lambda: page.press("#f-price-max", "Enter"))
    filtered = cards(page)
    cheap = sorted(p["sku"] for p in products if p["price"] <= 40)
    assert filtered and all(price_of(c) <= 40 for c in filtered)
    assert page.text_content("#status").startswith(f"Results 1–{min(12, len(cheap))} of {len(cheap)}")
    shot(page, "04-price-filter")

    # 5. more like this: similar products, still within the filter, never the product itself
    liked = filtered[0]
    run_search(page, lambda: page.click(".card >> nth=0 >> button.like"))
    assert page.is_visible("#like-banner") and liked["title"] in page.text_content("#like-banner")
    similar = cards(page)
    assert similar and liked["product"] not in {c["product"] for c in similar}
    assert all(price_of(c) <= 40 for c in similar)
    shot(page, "05-more-like-this")

    # 6. a readable error: keyword mode cannot rank a photo alone
    run_search(page, lambda: page.click("#clear-like"))
    page.fill("#q", "")
    run_search(page, lambda: page.set_input_files("#file", str(photo)))
    page.check("#mode-keyword")
    page.wait_for_selector("#error:not([hidden])")
    assert "keyword mode needs a text term" in page.text_content("#error")
    assert cards(page) == []
    shot(page, "06-error")
    assert errors == []
    page.close()


def test_search_page_fits_a_phone(server, browser):
    base, _, _, _ = server
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.goto(base + "/")
    page.wait_for_selector("fieldset[data-field=price]", state="attached")
    page.fill("#q", "blue wool scarf")
    run_search(page, lambda: page.click("#search-btn"))
    assert len(cards(page)) == 12
    assert not page.is_visible("#f-price-max")  # filters start folded on a phone, results come first
    page.click("#filters-box summary")
    assert page.is_visible("#f-price-max")
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 390
    widths = page.eval_on_selector_all(".card", "els => els.map(e => e.getBoundingClientRect().width)")
    assert all(120 < w < 200 for w in widths)  # two columns
    shot(page, "07-phone")
    page.close()


@pytest.fixture(scope="module")
def photo_server(tmp_path_factory, tiny_encoder):
    """A photo library (tests/photo_library.py) served like the shop."""
    from conftest import run_index
    from photo_library import build_library
    from mmsearch.api import create_app
    from mmsearch.config import Settings
    from mmsearch.search import Searcher

    root = tmp_path_factory.mktemp("webphotos")
    photos = build_library(root / "photos", n=20)
    run_index(root / "photos", root / "idx", tiny_encoder)
    searcher = Searcher(root / "idx", tiny_encoder)
    with LiveServer(create_app(Settings(index_dir=root / "idx"), searcher=searcher)) as live:
        yield live.url, photos


def test_photo_page_filters_by_date_place_and_camera(photo_server, browser):
    url, photos = photo_server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url + "/")
    page.wait_for_selector("#filters fieldset[data-field=taken] .histogram .bar")
    legends = page.eval_on_selector_all("#filters legend", "els => els.map(e => e.textContent)")
    assert legends[:4] == ["taken", "country", "city", "camera"]  # photo facets first
    assert not {"gps lat", "width", "taken source"} & set(legends)  # technical fields stay out of the way
    page.fill("#q", "Lisbon")
    page.check("#mode-keyword")
    run_search(page, lambda: page.click("#search-btn"))
    lines = page.eval_on_selector_all(".card .taken", "els => els.map(e => e.textContent)")
    in_lisbon = [p for p in photos if p.city == "Lisbon"]
    assert len(lines) == len(in_lisbon) and all("Lisbon, Portugal" in line for line in lines)
    run_search(page, lambda: page.select_option("#sort", "-taken"))
    dates = [line[:10] for line in page.eval_on_selector_all(".card .taken", "els => els.map(e => e.textContent)")]
    assert dates == sorted(dates, reverse=True)
    page.check("#mode-vector")  # every photo is a candidate; the month histogram narrows them
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Results')")
    month = sorted({p.taken[:7] for p in photos})[0]
    bar = page.locator(f".histogram .bar[title^='{month}:']")
    run_search(page, lambda: bar.click())
    assert page.input_value("#f-taken-min") == f"{month}-01"
    dates = [line[:7] for line in page.eval_on_selector_all(".card .taken", "els => els.map(e => e.textContent)")]
    assert dates and set(dates) == {month}
    run_search(page, lambda: page.click("#clear-filters"))
    camera = page.locator("#filters fieldset[data-field=camera] input[value='Google Pixel 7']")
    run_search(page, lambda: camera.check())
    lines = page.eval_on_selector_all(".card .taken", "els => els.map(e => e.textContent)")
    assert lines and all(line.endswith("Google Pixel 7") for line in lines)
    shot(page, "photos")
    page.close()
