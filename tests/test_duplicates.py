"""Near-duplicates: edited copies of a photo are grouped with it, best copy first; other photos are not.

The photos are made here (bench/duplicate_photos.py): originals with EXIF, copies resized, cropped by
5 %, colour-shifted and saved at JPEG quality 40 without EXIF, and unrelated photos of the same style.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from bench.duplicate_photos import make_duplicate_set
from conftest import run_index
from mmsearch.api import create_app
from mmsearch.cli import main
from mmsearch.config import Settings
from mmsearch.duplicates import CACHE_FILE, DuplicateOptions, group_pairs, neighbour_pairs
from mmsearch.imaging.fingerprint import crop_variants, visual_similarity
from mmsearch.vectors.index import VectorIndex
from mmsearch.vectors.selfjoin import close_pairs
from mmsearch.search import Searcher

SMALL = (400, 300)


def _cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_visual_similarity_tells_edited_copies_from_other_photos(tmp_path):
    photos = make_duplicate_set(tmp_path / "photos", originals=6, unrelated=10, size=SMALL)
    variants = {p: crop_variants(Image.open(p)) for p in photos.all_paths()}
    copies = [visual_similarity(variants[a], variants[b]) for a, b in photos.pairs]
    assert min(copies) >= 0.97, copies
    pairs = set(photos.pairs)
    others = [visual_similarity(variants[a], variants[b]) for a, b in itertools.combinations(photos.all_paths(), 2)
              if (a, b) not in pairs and (b, a) not in pairs]
    assert max(others) < DuplicateOptions().threshold, max(others)


def test_neighbour_pairs_follow_a_large_group_beyond_k():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=16)
    group = centre + rng.normal(scale=0.01, size=(30, 16))  # 30 copies of one picture
    others = rng.normal(size=(100, 16))
    vectors = np.vstack([group, others]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index = VectorIndex(16, "Flat")
    index.add(ids, vectors)
    pairs = neighbour_pairs(index.search, ids, vectors, k=2, floor=0.95)
    assert set(pairs) == set(itertools.combinations(range(1, 31), 2))  # every pair of the 30, none outside
    assert group_pairs(pairs) == [list(range(1, 31))]


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_self_join_finds_the_close_pairs_an_exact_comparison_finds():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 32))
    spread = centres[rng.integers(0, 40, 6000)] + rng.normal(scale=0.6, size=(6000, 32))
    copies = spread[:300] + rng.normal(scale=0.05, size=(300, 32))  # 300 near-copies (cosine ~0.999)
    vectors = _unit(np.vstack([spread, copies]))
    ids = rng.permutation(np.arange(10, 10 + len(vectors))).astype(np.int64)  # ids in no particular order
    joined = close_pairs(ids, vectors, floor=0.9)
    scores = vectors @ vectors.T
    rows, cols = np.nonzero(np.triu(scores >= 0.9, 1))
    exact = {(min(a, b), max(a, b)): float(scores[i, j]) for i, j, a, b in zip(rows, cols, ids[rows].tolist(), ids[cols].tolist())}
    assert joined.lists > 1 and len(exact) > 300
    planted = {(min(a, b), max(a, b)) for a, b in zip(ids[:300].tolist(), ids[6000:].tolist())}
    assert planted <= set(joined.pairs)
    assert len(set(joined.pairs) & set(exact)) >= 0.97 * len(exact)
    assert set(joined.pairs) <= set(exact)  # nothing below the floor
    assert all(abs(joined.pairs[p] - exact[p]) < 1e-5 for p in joined.pairs)


def test_self_join_keeps_a_group_larger_than_its_per_row_limit_connected():
    rng = np.random.default_rng(2)
    group = rng.normal(size=16) + rng.normal(scale=0.01, size=(300, 16))  # 300 copies of one picture
    vectors = _unit(np.vstack([group, rng.normal(size=(3000, 16))]))
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    joined = close_pairs(ids, vectors, floor=0.95, max_per_row=16)
    assert len(joined.pairs) <= 300 * 16 * joined.assign < 300 * 299 // 2  # each keeps its 16 closest per list, not all
    assert group_pairs(joined.pairs)[0] == list(range(1, 301))


def test_group_pairs_are_connected_components_largest_first():
    assert group_pairs([(5, 6), (1, 2), (2, 3), (9, 8)]) == [[1, 2, 3], [5, 6], [8, 9]]


@pytest.fixture()
def photo_index(tmp_path, tiny_encoder):
    """3 originals with edited copies, 6 other photos, and a byte-for-byte copy of original 0 that is older."""
    photos = make_duplicate_set(tmp_path / "photos", originals=3, unrelated=6, size=SMALL)
    exact = tmp_path / "photos" / "backup" / "orig_00000.jpg"
    exact.parent.mkdir()
    shutil.copy(photos.pairs[0][0], exact)
    os.utime(exact, (1_500_000_000, 1_500_000_000))  # 2017: older than the original's file
    index_dir = tmp_path / "index"
    run_index(tmp_path / "photos", index_dir, tiny_encoder)
    return photos, str(exact.resolve()), index_dir


def test_cli_lists_each_photo_with_its_copies_best_first(photo_index):
    photos, exact, index_dir = photo_index
    result = _cli("duplicates", "--index-dir", index_dir, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    groups = [[c["path"] for c in g["copies"]] for g in report["groups"]]
    expected = [[exact, photos.pairs[0][0], photos.pairs[0][1]]] + [list(p) for p in photos.pairs[1:]]
    # the largest copy first; of two equally large ones the older; the small edited copy last
    assert sorted(groups) == sorted(expected)
    first = next(g for g in report["groups"] if len(g["copies"]) == 3)
    assert [c["width"] for c in first["copies"]][:2] == [SMALL[0], SMALL[0]] and first["copies"][2]["width"] < SMALL[0]
    assert first["copies"][1]["similarity"] > 0.99 and first["best"] == first["copies"][0]["id"]
    assert (index_dir / CACHE_FILE).exists()

    text = _cli("duplicates", "--index-dir", index_dir)
    assert "3 groups of near-duplicates among 13 images" in text.output
    strict = json.loads(_cli("duplicates", "--index-dir", index_dir, "--json", "--threshold", "0.9999").output)
    assert len(strict["groups"]) == 1  # only the byte-for-byte copy is that similar


def test_above_the_ann_threshold_the_self_join_finds_the_same_groups(photo_index, monkeypatch):
    photos, exact, index_dir = photo_index
    below = json.loads(_cli("duplicates", "--index-dir", index_dir, "--json").output)
    monkeypatch.setenv("MMSEARCH_ANN_THRESHOLD", "2")  # 13 pictures: the self-join instead of the exact k-NN
    above = json.loads(_cli("duplicates", "--index-dir", index_dir, "--json").output)
    assert [[c["path"] for c in g["copies"]] for g in above["groups"]] == [[c["path"] for c in g["copies"]] for g in below["groups"]]
    assert len(above["groups"]) == 3


def test_http_duplicates_pages_groups_and_refuses_bad_thresholds(photo_index, tiny_encoder):
    photos, exact, index_dir = photo_index
    app = create_app(Settings(index_dir=index_dir), searcher=Searcher(index_dir, tiny_encoder))
    with TestClient(app) as client:
        body = client.get("/v1/duplicates").json()
        assert body["total_groups"] == 3 and body["images"] == 13 and len(body["groups"]) == 3
        assert body["groups"][0]["copies"][0]["path"] == exact  # the largest group first, its best copy first
        page = client.get("/v1/duplicates", params={"limit": 1, "offset": 1}).json()
        assert page["total_groups"] == 3 and [g["best"] for g in page["groups"]] == [body["groups"][1]["best"]]
        for bad in ({"threshold": 0}, {"threshold": 1.5}, {"limit": 0}, {"offset": -1}):
            response = client.get("/v1/duplicates", params=bad)
            assert response.status_code == 422 and "error" in response.json()


def test_a_deleted_copy_leaves_its_group(photo_index, tiny_encoder, tmp_path):
    photos, exact, index_dir = photo_index
    Path(photos.pairs[1][1]).unlink()
    run_index(tmp_path / "photos", index_dir, tiny_encoder)
    report = json.loads(_cli("duplicates", "--index-dir", index_dir, "--json").output)
    assert len(report["groups"]) == 2
    assert all(photos.pairs[1][0] not in [c["path"] for c in g["copies"]] for g in report["groups"])


@pytest.mark.slow
def test_default_model_finds_edited_copies_among_unrelated_photos(tmp_path):
    """The done-when of the issue at a smaller size (bench/duplicates.py runs 200 + 200 among 2,000)."""
    photos = make_duplicate_set(tmp_path / "photos", originals=20, unrelated=120, size=(480, 360))
    index_dir = tmp_path / "index"
    assert _cli("index", tmp_path / "photos", "--index-dir", index_dir, "--workers", "1").exit_code == 0
    report = json.loads(_cli("duplicates", "--index-dir", index_dir, "--json").output)
    found = {frozenset(pair) for g in report["groups"] for pair in itertools.combinations([c["path"] for c in g["copies"]], 2)}
    truth = {frozenset(pair) for pair in photos.pairs}
    recall = len(found & truth) / len(truth)
    false_share = len(found - truth) / max(1, len(found))
    print(f"\nrecall {recall:.3f}, false pairs {false_share:.3%} of {len(found)}, {report['seconds']}s")
    assert recall >= 0.95 and false_share <= 0.01
    assert all("/originals/" in g["copies"][0]["path"] for g in report["groups"])  # the original is the best copy
