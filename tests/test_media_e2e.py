"""Videos and PDFs end to end with the real default model: scenes of pictures it knows are found by
typing what they show, and a generated report's pages by their words and by their pictures."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import REPO
from media_data import Page, Scene, write_pdf, write_scenes_video
from mmsearch.cli import main
from mmsearch.imaging.decode import open_image
from mmsearch.search import Searcher

pytestmark = pytest.mark.slow

SAMPLE = REPO / "data" / "sample"
# (picture, query, scene start, scene end): 5 s scenes, each cut a keyframe as x264 places them
SCENES = [("animals/elephant.png", "an elephant", 0, 5), ("food/pizza.png", "a pizza", 5, 10),
          ("vehicles/bicycle.png", "a bicycle", 10, 15), ("objects/guitar.png", "a guitar", 15, 20)]


def _cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def media_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("media_e2e")
    folder = root / "files"
    folder.mkdir()
    write_scenes_video(folder / "holiday.mp4", [Scene(end - start, SAMPLE / picture) for picture, _, start, end in SCENES],
                       size=(480, 360), fps=10)
    write_pdf(folder / "report.pdf", [
        Page(text="Quarterly sales report\nBread and croissants sold well this spring."),
        Page(text="Our new menu", picture=SAMPLE / "food" / "pizza.png"),
        Page(picture=SAMPLE / "animals" / "elephant.png"),
        Page(text="Travel\nThe night train leaves the station at nine."),
    ])
    result = _cli("index", folder, "--index-dir", root / "index", "--workers", "1")  # the default model
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output
    searcher = Searcher(root / "index", device="cpu")
    yield folder, searcher
    searcher.close()


def test_typing_what_a_scene_shows_returns_the_video_at_that_scene(media_index):
    folder, searcher = media_index
    found = 0
    for _, query, start, end in SCENES:
        hits = [h for h in searcher.search_text(query, "image", k=5) if h.path == str(folder / "holiday.mp4")]
        assert len(hits) == 1 and len(hits[0].moments) >= 4  # one hit for the video, its moments listed
        found += start <= hits[0].metadata["timestamp"] < end
    assert found >= 3, "the best moment should fall inside the scene asked for"


def test_a_picture_finds_its_scene_in_the_video(media_index):
    folder, searcher = media_index
    for picture, _, start, end in SCENES:
        hits = searcher.search_image(open_image(str(SAMPLE / picture)), "image", k=5)
        video = next(h for h in hits if h.path == str(folder / "holiday.mp4"))
        assert start <= video.metadata["timestamp"] < end, picture


def test_pdf_pages_are_found_by_words_and_by_pictures(media_index):
    folder, searcher = media_index
    pdf = str(folder / "report.pdf")
    by_text = searcher.search_text("the night train to the station", "text", k=3)
    assert by_text[0].path == pdf and by_text[0].metadata["page"] == 4
    by_picture = searcher.search_image(open_image(str(SAMPLE / "animals" / "elephant.png")), "image", k=5)
    pdf_hit = next(h for h in by_picture if h.path == pdf)
    assert pdf_hit.metadata["page"] == 3
    by_concept = [h for h in searcher.search_text("a pizza", "image", k=5) if h.path == pdf]
    assert by_concept and by_concept[0].metadata["page"] == 2
