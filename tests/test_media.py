"""Videos and PDFs: sampled frames and pages become items, searches return the file with its best
moments, and re-indexing treats each file as one unit (unchanged, changed, moved, deleted)."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import pattern_image, run_index
from media_data import Page, Scene, write_pdf, write_scenes_video
from mmsearch.imaging.pdf import PdfReader, render_page
from mmsearch.imaging.video import VideoSampling, frame_at, sample_frames
from mmsearch.search import Searcher

RED, BLUE, GREEN = (220, 30, 30), (30, 60, 220), (30, 200, 30)
SCENES = [Scene(4, RED), Scene(5, BLUE), Scene(4, GREEN)]  # cuts at 4 s and 9 s, 13 s long


def _near(pixel, colour, tol=40) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour))


def _scene_at(seconds: float) -> tuple[int, int, int]:
    return RED if seconds < 4 else BLUE if seconds < 9 else GREEN


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_scenes_video(tmp_path_factory.mktemp("clip") / "scenes.mp4", SCENES)


# --- the video reader ---

def test_frames_are_taken_at_scene_cuts(clip):
    frames = list(sample_frames(str(clip), VideoSampling(interval=60)))
    assert [f.timestamp for f in frames] == [0.0, 4.0, 9.0]
    assert [f.scene_change for f in frames] == [False, True, True]
    for frame in frames:
        assert _near(frame.image.getpixel((4, frame.image.height // 2)), _scene_at(frame.timestamp))


def test_at_least_one_frame_every_interval(clip):
    frames = list(sample_frames(str(clip), VideoSampling(interval=1.5)))
    times = [f.timestamp for f in frames]
    assert times == sorted(times) and times[0] == 0.0
    assert max(b - a for a, b in zip(times, times[1:])) <= 1.5 + 1e-6
    assert times[-1] >= 13 - 1.5 - 0.1  # the tail after the last keyframe is sampled too
    assert {4.0, 9.0} <= set(times)  # the scene cuts are still there
    for frame in frames:  # each frame is the picture shown at its time
        assert _near(frame.image.getpixel((4, frame.image.height // 2)), _scene_at(frame.timestamp)), frame.timestamp


def test_frame_at_seeks_to_the_moment(clip):
    for seconds in (1.0, 6.5, 11.0):
        image = frame_at(str(clip), seconds)
        assert _near(image.getpixel((4, image.height // 2)), _scene_at(seconds)), seconds


def test_frames_are_scaled_down_and_capped(tmp_path):
    path = write_scenes_video(tmp_path / "wide.mkv", [Scene(2, RED)], size=(640, 360))
    frames = list(sample_frames(str(path), VideoSampling(interval=0.5, max_frames=3), min_side=90))
    assert len(frames) == 3
    assert frames[0].image.size == (160, 90)


# --- the PDF reader ---

def test_pdf_pages_have_pictures_and_text(tmp_path):
    path = write_pdf(tmp_path / "doc.pdf", [Page(text="first page words"), Page(picture=pattern_image(1))])
    with PdfReader(str(path)) as reader:
        pages = list(reader.pages(10, min_side=200))
    assert [p.number for p in pages] == [1, 2]
    assert pages[0].text == "first page words" and pages[1].text == ""
    assert min(pages[0].image.size) == 200 and pages[0].image.mode == "RGB"
    thumb = render_page(str(path), 2, 100)
    assert min(thumb.size) == 100 and abs(thumb.width / thumb.height - 612 / 792) < 0.01  # US letter, as drawn
    assert [p.words_only for p in pages] == [True, False]  # words alone; a picture alone


def test_a_page_of_words_alone_is_indexed_by_its_text_only(tmp_path, tiny_encoder):
    """Its picture would show only the words: as an image item it answered picture queries it has nothing
    to do with. A page with words and a picture keeps both items."""
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "doc.pdf", [Page(text="sales report"), Page(text="our menu", picture=pattern_image(1))])
    run_index(folder, tmp_path / "index", tiny_encoder, workers=1)
    searcher = Searcher(tmp_path / "index", tiny_encoder)
    items = sorted((r.meta["page"], r.modality) for r in searcher.store.all_items())
    searcher.close()
    assert items == [(1, "text"), (2, "image"), (2, "text")]


# --- indexing and searching ---

def _frame_colour_query(colour) -> Image.Image:
    return Image.new("RGB", (320, 240), colour)


def test_video_query_returns_the_video_with_a_moment_in_the_scene(tmp_path, tiny_encoder):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(write_scenes_video(tmp_path / "clip.mp4", SCENES), folder / "clip.mp4")
    pattern_image(7).save(folder / "photo.png")
    report = run_index(folder, tmp_path / "index", tiny_encoder, workers=1)
    assert report.failures == []
    assert report.added == 4  # three frames and the photo
    searcher = Searcher(tmp_path / "index", tiny_encoder)
    for colour, scene in ((BLUE, (4, 9)), (GREEN, (9, 13))):
        hits = searcher.search_image(_frame_colour_query(colour), "image", k=5)
        video_hits = [h for h in hits if h.path == str(folder / "clip.mp4")]
        assert len(video_hits) == 1  # the frames of one video come back as one hit
        best = video_hits[0]
        assert best.metadata["video"] == str(folder / "clip.mp4")
        assert scene[0] <= best.metadata["timestamp"] < scene[1]
        assert best.moments[0]["timestamp"] == best.metadata["timestamp"]
        assert [m["score"] for m in best.moments] == sorted((m["score"] for m in best.moments), reverse=True)
        assert len(best.moments) == 3
    searcher.close()


def test_video_is_one_unit_when_reindexing(tmp_path, tiny_encoder):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_scenes_video(folder / "a.mp4", SCENES)
    index = tmp_path / "index"
    run_index(folder, index, tiny_encoder, workers=1)
    searcher = Searcher(index, tiny_encoder)
    ids = sorted(r.id for r in searcher.store.all_items())
    searcher.close()

    again = run_index(folder, index, False)  # unchanged: nothing is decoded or embedded
    assert (again.added, again.removed, again.unchanged) == (0, 0, 3)

    os.rename(folder / "a.mp4", folder / "b.mp4")
    moved = run_index(folder, index, False)  # a rename keeps every frame's id and vector
    assert (moved.moved, moved.added, moved.removed) == (3, 0, 0)
    store = Searcher(index, tiny_encoder).store
    records = store.all_items()
    assert sorted(r.id for r in records) == ids
    assert {r.meta["video"] for r in records} == {str(folder / "b.mp4")}
    assert all(r.key.startswith(str(folder / "b.mp4") + "#t=") for r in records)

    time.sleep(0.01)
    write_scenes_video(folder / "b.mp4", [Scene(3, RED), Scene(3, BLUE)])  # edited: cut at 3 s, 6 s long
    changed = run_index(folder, index, tiny_encoder, workers=1)
    assert (changed.reembedded, changed.added, changed.removed) == (1, 1, 2)  # t=0 keeps its id
    store = Searcher(index, tiny_encoder).store
    assert sorted(r.meta["timestamp"] for r in store.all_items()) == [0.0, 3.0]

    os.remove(folder / "b.mp4")
    gone = run_index(folder, index, False)
    assert gone.removed == 2
    assert Searcher(index, tiny_encoder).store.all_items() == []


def test_pdf_pages_are_found_by_text_and_by_picture(tmp_path, tiny_encoder):
    from mmsearch.query import Query, QueryEngine, Term

    folder = tmp_path / "docs"
    folder.mkdir()
    pages = [Page(text="quarterly report\nrevenue grew"), Page(text="the night train to Lisbon", picture=pattern_image(3)),
             Page(picture=pattern_image(4)), Page(text="bread recipes")]
    pdf = write_pdf(folder / "report.pdf", pages)
    report = run_index(folder, tmp_path / "index", tiny_encoder, workers=1)
    assert report.failures == []
    # a text item per page with a text layer, a picture per page with more than words (pages 2 and 3)
    assert report.added == 2 + 3
    searcher = Searcher(tmp_path / "index", tiny_encoder)
    engine = QueryEngine(searcher)

    result = engine.run(Query([Term(text="night train")], mode="keyword", target="all"))
    assert len(result.hits) == 1
    hit = result.hits[0]
    assert (hit.path, hit.metadata["document"], hit.metadata["page"]) == (str(pdf), str(pdf), 2)
    assert hit.text == "the night train to Lisbon"
    page_picture = searcher.store.get(hit.image_id)
    assert page_picture.modality == "image" and page_picture.meta["page"] == 2  # the page shown beside its text

    with PdfReader(str(pdf)) as reader:
        third = reader.page(3, min_side=300).image
    hits = searcher.search_image(third, "image", k=3)
    assert hits[0].path == str(pdf) and hits[0].metadata["page"] == 3
    assert hits[0].moments[0]["page"] == 3
    searcher.close()


def test_api_serves_frames_pages_and_the_file_with_ranges(tmp_path, tiny_encoder):
    from mmsearch.api.app import create_app
    from mmsearch.config import Settings

    folder = tmp_path / "media"
    folder.mkdir()
    video = write_scenes_video(folder / "clip.webm", SCENES, codec="libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8"})
    write_pdf(folder / "doc.pdf", [Page(text="hello pages"), Page(picture=pattern_image(2))])
    report = run_index(folder, tmp_path / "index", tiny_encoder, workers=1)
    assert report.failures == []
    searcher = Searcher(tmp_path / "index", tiny_encoder)
    with TestClient(create_app(Settings(index_dir=tmp_path / "index"), searcher=searcher)) as client:
        frames = {r.meta["timestamp"]: r.id for r in searcher.store.all_items() if "video" in r.meta}
        assert set(frames) >= {0.0, 4.0, 9.0}
        thumb = client.get(f"/v1/items/{frames[4.0]}/thumbnail")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        import io

        image = Image.open(io.BytesIO(thumb.content)).convert("RGB")
        assert _near(image.getpixel((4, image.height // 2)), BLUE)

        size = video.stat().st_size
        whole = client.get(f"/v1/items/{frames[0.0]}/file")
        assert whole.status_code == 200 and len(whole.content) == size
        assert whole.headers["content-type"] == "video/webm"
        part = client.get(f"/v1/items/{frames[0.0]}/file", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == video.read_bytes()[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{size}"

        page = next(r.id for r in searcher.store.all_items() if r.meta.get("page") == 2 and r.modality == "image")
        assert client.get(f"/v1/items/{page}/thumbnail").status_code == 200
        body = client.post("/v1/search", json={"text": "hello pages", "target": "all", "k": 5}).json()
        pdf_hit = next(h for h in body["hits"] if h["path"].endswith("doc.pdf"))
        assert {m["page"] for m in pdf_hit["moments"]} == {1, 2}
        video_hit = next(h for h in body["hits"] if h["path"].endswith("clip.webm"))
        assert {m["timestamp"] for m in video_hit["moments"]} == set(frames)
    searcher.close()


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")
def test_search_page_lists_moments_and_plays_from_them(tmp_path, tiny_encoder):
    """The page shows a video hit with its moments as #t= links; a click plays the file from there
    (served by item id, with Range requests); a PDF hit links to its page."""
    from playwright.sync_api import sync_playwright

    from live_server import LiveServer
    from mmsearch.api.app import create_app
    from mmsearch.config import Settings

    folder = tmp_path / "media"
    folder.mkdir()
    write_scenes_video(folder / "clip.webm", SCENES, codec="libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8"})
    write_pdf(folder / "doc.pdf", [Page(text="hello pages"), Page(picture=pattern_image(2))])
    run_index(folder, tmp_path / "index", tiny_encoder, workers=1)
    searcher = Searcher(tmp_path / "index", tiny_encoder)
    app = create_app(Settings(index_dir=tmp_path / "index"), searcher=searcher)
    with LiveServer(app) as live, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
                                    headless=True)
        try:
            page = browser.new_page()
            page.goto(live.url + "/")
            page.fill("#q", "a coloured scene")
            with page.expect_response(lambda r: r.url.endswith("/v1/query")):
                page.click("button[type=submit]")
            page.wait_for_selector(".card .moments a")
            links = page.eval_on_selector_all(".card .moments a", "els => els.map(e => e.getAttribute('href'))")
            video_links = [h for h in links if "#t=" in h]
            assert sorted(float(h.split("#t=")[1]) for h in video_links) == [0.0, 4.0, 9.0]
            assert {h.split("#page=")[1] for h in links if "#page=" in h} == {"1", "2"}
            target = next(h for h in video_links if float(h.split("#t=")[1]) == 4.0)
            with page.expect_response(lambda r: "/file" in r.url and r.status in (200, 206)):
                page.click(f".card .moments a[href='{target}']")
            page.wait_for_function("() => { const v = document.querySelector('.card video'); return v && v.readyState >= 1; }")
            assert abs(page.eval_on_selector(".card video", "v => v.currentTime") - 4.0) < 0.5
        finally:
            browser.close()
    searcher.close()


def test_repair_re_embeds_a_frame_and_a_page_text_from_their_file(tmp_path, tiny_encoder):
    """`mmsearch verify --repair` finds a frame again at its timestamp, and a PDF page's text item keeps
    its page text (the PDF file itself is not read as text)."""
    import sqlite3

    import numpy as np

    from mmsearch.verify import repair_index

    folder = tmp_path / "media"
    folder.mkdir()
    write_scenes_video(folder / "clip.mp4", SCENES)
    write_pdf(folder / "doc.pdf", [Page(text="hello pages"), Page(text="second page words")])
    run_index(folder, tmp_path / "index", tiny_encoder, workers=1)
    searcher = Searcher(tmp_path / "index", tiny_encoder)
    records = searcher.store.all_items()
    frame = next(r for r in records if r.meta.get("timestamp") == 4.0)
    text = next(r for r in records if r.modality == "text" and r.meta.get("page") == 2)
    before = searcher.store.vectors_for([frame.id, text.id])
    searcher.close()
    with sqlite3.connect(tmp_path / "index" / "items.sqlite") as conn:
        conn.execute("DELETE FROM embeddings WHERE item_id IN (?, ?)", (frame.id, text.id))
    report = repair_index(tmp_path / "index", lambda spec: tiny_encoder)
    assert report.ok, report.problems
    assert any("re-embedded 2 items" in line for line in report.repaired)
    store = Searcher(tmp_path / "index", tiny_encoder).store
    after = store.vectors_for([frame.id, text.id])
    assert np.allclose(after[text.id], before[text.id], atol=1e-5)  # the stored page text, not the PDF's bytes
    assert float(after[frame.id] @ before[frame.id]) > 0.98  # the frame at 4 s, decoded again
    assert store.get(text.id).text == "second page words"


def test_ocr_reads_a_scanned_pdf_page(tmp_path, tiny_encoder):
    """With OCR on, a page that is only a picture of text (a scan) gets a text item with the words read."""
    from PIL import ImageDraw, ImageFont

    scan = Image.new("RGB", (900, 500), "white")
    ImageDraw.Draw(scan).text((40, 200), "INVOICE PAID", fill="black", font=ImageFont.load_default(size=90))
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "scan.pdf", [Page(picture=scan)])
    report = run_index(folder, tmp_path / "index", tiny_encoder, workers=1, ocr=True)
    assert report.failures == []
    store = Searcher(tmp_path / "index", tiny_encoder).store
    texts = [r for r in store.all_items() if r.modality == "text"]
    assert len(texts) == 1 and texts[0].meta["ocr"] is True and texts[0].meta["page"] == 1
    assert "INVOICE" in texts[0].text.upper()
