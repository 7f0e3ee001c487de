"""End to end with the real default model on the bundled sample, exactly as the README's first command runs.

These are the quality checks a newcomer makes by hand: a typed concept finds its picture, a picture finds
itself and the note about it, and a second `index` run embeds nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from conftest import REPO
from mmsearch.api.app import create_app
from mmsearch.cli import main
from mmsearch.config import Settings
from mmsearch.search import Searcher

pytestmark = pytest.mark.slow

SAMPLE = REPO / "data" / "sample"
SAMPLE_PICTURES = sorted(SAMPLE.glob("*/*.png"))
# OpenMoji, the sample's art style, is held out of training entirely (docs/model-card.md), so this is the
# hard case. Measured with the shipped weights (release 5497be071b25, head trained on emoji and stamps, mix
# 2.0) and hub channel: top-1 0.46, top-5 0.75 (without the hub channel 0.45 and 0.73; release 7de17accba62:
# 0.35 and 0.71; the untrained bridge alone: 0.09 and 0.24).
# The floors sit below the measured values so that only a real regression fails.
MIN_TOP1 = 0.30
MIN_TOP5 = 0.65


def _cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory) -> Path:
    index_dir = tmp_path_factory.mktemp("sample") / "index"
    result = _cli("index", SAMPLE, "--index-dir", index_dir, "--workers", "1")  # no --model: the default
    assert result.exit_code == 0, result.output
    assert f"{len(SAMPLE_PICTURES)} images" in result.output and "0 failed" in result.output
    return index_dir


@pytest.fixture(scope="module")
def searcher(sample_index) -> Searcher:
    searcher = Searcher(sample_index, device="cpu")
    yield searcher
    searcher.close()


def _concept(path: Path) -> str:
    return path.stem.replace("-", " ")


def _concept_recall(searcher: Searcher) -> tuple[float, float]:
    """(top-1, top-5) of typing each sample picture's concept name."""
    queries = [_concept(p) for p in SAMPLE_PICTURES]
    results = searcher.search_texts(queries, target="image", k=5)
    ranks = []
    for picture, hits in zip(SAMPLE_PICTURES, results):
        found = [Path(h.path).name for h in hits]
        ranks.append(found.index(picture.name) if picture.name in found else None)
    return sum(r == 0 for r in ranks) / len(ranks), sum(r is not None for r in ranks) / len(ranks)


def test_typed_concepts_find_their_pictures(searcher):
    top1, top5 = _concept_recall(searcher)
    assert top1 >= MIN_TOP1 and top5 >= MIN_TOP5, f"top-1 {top1:.2f}, top-5 {top5:.2f} over {len(SAMPLE_PICTURES)} concepts"


def test_the_bridge_alone_is_a_model_spec_and_the_trained_heads_beat_it(searcher, tmp_path):
    """`mmsearch-lite:bridge` (eval's baseline) works with every command, and training is worth it."""
    result = _cli("index", SAMPLE, "--index-dir", tmp_path / "bridge", "--workers", "1", "--model", "mmsearch-lite:bridge")
    assert result.exit_code == 0, result.output
    bridge = Searcher(tmp_path / "bridge", device="cpu")
    try:
        assert bridge.info()["model_id"] == "mmsearch-lite@bridge-only"
        (bridge_top1, bridge_top5), (top1, top5) = _concept_recall(bridge), _concept_recall(searcher)
    finally:
        bridge.close()
    assert top1 > bridge_top1 + 0.15 and top5 > bridge_top5 + 0.15, (bridge_top1, bridge_top5, top1, top5)


@pytest.mark.parametrize("query, expected", [("a car", "automobile.png"), ("a slice of pizza", "pizza.png"), ("a red apple", "red-apple.png")])
def test_readme_queries_rank_the_right_picture_near_the_top(searcher, query, expected):
    hits = searcher.search_text(query, target="image", k=3)
    assert expected in [Path(h.path).name for h in hits], [Path(h.path).name for h in hits]


def test_a_picture_finds_itself_first(searcher):
    for picture in SAMPLE_PICTURES[::9]:
        with Image.open(picture) as image:
            hits = searcher.search_image(image.convert("RGB"), target="image", k=1)
        assert Path(hits[0].path).name == picture.name and hits[0].score > 0.99


def test_second_index_run_embeds_nothing(sample_index):
    result = _cli("index", SAMPLE, "--index-dir", sample_index, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "0 added" in result.output and f"{len(SAMPLE_PICTURES) + len(list((SAMPLE / 'notes').glob('*.txt')))} unchanged" in result.output


def test_http_search_by_text_and_by_uploaded_picture(sample_index, searcher):
    app = create_app(Settings(index_dir=sample_index, device="cpu"), searcher=searcher)
    with TestClient(app) as client:
        response = client.post("/v1/search", json={"text": "a slice of pizza", "target": "image", "k": 3})
        assert response.status_code == 200, response.text
        assert "pizza.png" in [Path(h["path"]).name for h in response.json()["hits"]]
        dog = SAMPLE / "animals" / "dog.png"
        response = client.post("/v1/search/image", files={"file": ("x.png", dog.read_bytes(), "image/png")}, data={"k": "1"})
        assert response.status_code == 200, response.text
        assert Path(response.json()["hits"][0]["path"]).name == "dog.png"
