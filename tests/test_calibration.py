"""Scores that mean the same across modalities (mmsearch.calibration, mmsearch calibrate).

Fast tests use synthetic vectors and the tiny random model; the slow test uses the real default model on
pictures and captions built from the bundled sample, where raw cosines bury the pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, TEST_MODEL, make_corpus, pattern_image, run_index
from mmsearch.calibration import (
    CALIBRATED, COSINE, DEFAULT, RAW, Calibration, ModalityStats, beside_weights_path, load_calibration, user_calibration_path,
)
from mmsearch.cli import main
from mmsearch.search import Searcher
from mmsearch.train import calibrate as C


def test_modality_stats_give_each_querys_exact_mean_and_spread():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(200, 16))
    queries = rng.normal(size=(5, 16))
    cosines = queries @ items.T
    expected = (cosines - cosines.mean(axis=1, keepdims=True)) / cosines.std(axis=1, keepdims=True)
    assert np.allclose(ModalityStats.of(items).normalise(queries, cosines), expected)


def test_a_modality_of_one_item_scores_it_as_typical():
    item = np.ones((1, 4)) / 2
    z = ModalityStats.of(item).normalise(np.array([[1.0, 0, 0, 0]]), np.array([[0.5]]))
    assert z.tolist() == [[0.0]]


def _synthetic(groups: int = 60, seed: int = 0):
    """Captions and queries close to their group's direction (text->text cosines ~0.8), pictures far from
    it (text->image cosines ~0.2): the gap the default model shows."""
    rng = np.random.default_rng(seed)
    dim = 64
    centres = rng.normal(size=(groups, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def around(weight: float) -> np.ndarray:
        v = weight * centres + rng.normal(size=(groups, dim)) / np.sqrt(dim)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    names = [f"g{i}" for i in range(groups)]
    pairs = C.PairSet([f"img{i}" for i in range(groups)], names, [f"caption {i}" for i in range(groups)], names,
                      [f"query {i}" for i in range(groups)], names)
    return pairs, {"image": around(0.35), "text": around(2.0), "query": around(2.0)}


def _merged_counts(pairs, vectors, offset: float | None):
    """(image in image top10, image in merged top20, text in text top10, text in merged top20); offset None = raw."""
    q = vectors["query"]
    cos_i, cos_t = q @ vectors["image"].T, q @ vectors["text"].T
    if offset is not None:
        cos_i = ModalityStats.of(vectors["image"]).normalise(q, cos_i) + offset
        cos_t = ModalityStats.of(vectors["text"]).normalise(q, cos_t)
    merged = np.concatenate([cos_i, cos_t], axis=1)
    top = lambda s, k: np.argsort(-s, axis=1)[:, :k]  # noqa: E731
    n = len(q)
    idx = np.arange(n)
    img10 = sum(i in row for i, row in zip(idx, top(cos_i, 10)))
    txt10 = sum(i in row for i, row in zip(idx, top(cos_t, 10)))
    all20 = top(merged, 20)
    return img10, sum(i in row for i, row in zip(idx, all20)), txt10, sum(n + i in row for i, row in zip(idx, all20))


def test_the_fitted_offset_keeps_both_modalities_best_matches_in_a_merged_list():
    pairs, vectors = _synthetic()
    img10, img20, txt10, txt20 = _merged_counts(pairs, vectors, None)
    assert img20 < img10 and txt20 >= txt10  # raw cosines: texts crowd the pictures out
    cross, misses_per_offset = C.offset_misses(pairs, vectors, "text")
    offset, misses = C.pick_offset(misses_per_offset)
    assert cross == "text->image" and misses == 0
    held_out_pairs, held_out = _synthetic(seed=1)
    img10, img20, txt10, txt20 = _merged_counts(held_out_pairs, held_out, offset)
    assert img20 >= img10 and txt20 >= txt10


def test_cross_fitted_offsets_pool_the_misses_of_every_fold():
    """Cross-fitting sums each fold's misses per offset: the offset chosen is one with the fewest misses
    over all folds together, so on these sets no fold loses a match that its single lists hold."""
    folds = [_synthetic(seed=seed) for seed in (2, 3)]
    per_fold = [C.offset_misses(pairs, vectors, "text")[1] for pairs, vectors in folds]
    offset, misses = C.pick_offset(per_fold[0] + per_fold[1])
    assert misses == 0
    chosen = int(np.flatnonzero(np.isclose(C.OFFSET_GRID, offset))[0])
    assert all(m[chosen] == 0 for m in per_fold)
    assert per_fold[0][0] > 0  # the far end of the grid does lose matches: the choice is not free
    for pairs, vectors in folds:
        img10, img20, txt10, txt20 = _merged_counts(pairs, vectors, offset)
        assert img20 >= img10 and txt20 >= txt10


def test_calibration_files_are_keyed_by_the_model_they_were_fitted_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    fitted = Calibration("ViT-B-32:laion2b_s34b_b79k", {"text->image": 0.5, "image->text": -0.25}, command="mmsearch calibrate x")
    fitted.save(user_calibration_path(fitted.model_id))
    loaded = load_calibration("ViT-B-32:laion2b_s34b_b79k", "ViT-B-32:laion2b_s34b_b79k")
    assert loaded.offsets == fitted.offsets and loaded.scale == CALIBRATED
    assert load_calibration("ViT-B-16:laion2b_s34b_b88k", "ViT-B-16:laion2b_s34b_b88k") is DEFAULT

    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"not read")
    beside = beside_weights_path(weights)
    assert beside.name == "mine.calibration.json"
    Calibration("mmsearch-lite@000000000000", {"text->image": 1.0}).save(beside)
    stale = load_calibration(f"mmsearch-lite:{weights}", "mmsearch-lite@111111111111")  # other weights than it was fitted on
    assert stale is DEFAULT and stale.offsets == {}
    (beside).write_text("{not json", encoding="utf-8")
    assert load_calibration(f"mmsearch-lite:{weights}", "mmsearch-lite@000000000000") is DEFAULT


def test_a_bad_offset_is_refused():
    with pytest.raises(ValueError):
        Calibration.from_json(json.dumps({"format": 2, "offsets": {"text->sound": 1.0}}))
    with pytest.raises(ValueError):
        Calibration.from_json(json.dumps({"format": 2, "offsets": {"text->image": "nan"}}))


def test_the_shipped_calibration_belongs_to_the_shipped_weights():
    """A retrained default model needs its calibration refitted (the command is in the file)."""
    from mmsearch.calibration import weights_file_of
    from mmsearch.encoders.registry import reported_lite_model_id
    from mmsearch.hashing import sha256_file

    weights = weights_file_of("mmsearch-lite")
    shipped = Calibration.from_json(beside_weights_path(weights).read_text(encoding="utf-8"))
    # the id the default model reports: the weights' sha256 prefix plus the shipped colour and hub channels' fingerprints
    model_id = reported_lite_model_id(weights, "auto", "auto")
    assert "+hubs-" in model_id and shipped.model_id == model_id and shipped.weights_sha256 == sha256_file(weights), shipped.command
    assert set(shipped.offsets) == {"text->image", "image->text"}


@pytest.fixture()
def mixed_index(tmp_path, tiny_encoder):
    root = tmp_path / "corpus"
    make_corpus(root)
    run_index(root, tmp_path / "idx", tiny_encoder)
    searcher = Searcher(tmp_path / "idx", tiny_encoder, reload_interval=0)
    yield searcher
    searcher.close()


def test_merged_lists_rank_on_the_calibrated_scale_and_keep_the_cosine(mixed_index):
    searcher = mixed_index
    searcher.use_calibration(Calibration(searcher.info()["model_id"], {"text->image": 0.7}))
    query = searcher.encoder.encode_texts(["The sea is wide"])
    merged = searcher.search_vectors(query, "all", k=9, query_modality="text")[0]
    assert {h.modality for h in merged} == {"image", "text"} and {h.scale for h in merged} == {CALIBRATED}
    for hit in merged:
        vectors = searcher.store.vectors_for([hit.id])
        assert hit.cosine == pytest.approx(float(vectors[hit.id] @ query[0]), abs=1e-5)
        stats = searcher._stats(searcher._snapshot, hit.modality)
        expected = stats.normalise(query, np.array([[hit.cosine]]))[0, 0] + (0.7 if hit.modality == "image" else 0.0)
        assert hit.score == pytest.approx(expected, abs=1e-4)
    assert [h.score for h in merged] == sorted((h.score for h in merged), reverse=True)
    single = searcher.search_vectors(query, "image", k=3, query_modality="text")[0]
    assert all(h.scale == COSINE and h.score == h.cosine for h in single)  # one modality: raw cosines, as before
    searcher.use_calibration(RAW)
    raw = searcher.search_vectors(query, "all", k=9, query_modality="text")[0]
    assert all(h.scale == COSINE and h.score == h.cosine for h in raw)


def test_query_engine_merges_on_the_calibrated_scale(mixed_index):
    from mmsearch.query import Query, QueryEngine, Term

    searcher = mixed_index
    result = QueryEngine(searcher).run(Query([Term(text="The night train")], target="all", limit=9))
    assert {h.scale for h in result.hits} == {CALIBRATED}
    assert all(h.cosine is not None and h.vector_score == h.score for h in result.hits)
    by_id = {h.id: h for h in searcher.search_texts(["The night train"], "all", k=9)[0]}
    assert [h.id for h in result.hits] == list(by_id)  # the same merge as the plain search
    hybrid = QueryEngine(searcher).run(Query([Term(text="The night train")], target="all", mode="hybrid", limit=5))
    assert {h.scale for h in hybrid.hits} == {"rrf"}


def _manifest(root: Path, groups: int = 8) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for g in range(groups):
        for style in range(2):
            name = f"g{g}s{style}.png"
            pattern_image(100 * g + style).save(root / name)
            rows.append({"image": name, "text": f"thing number {g}", "texts": [f"item {g}", "stuff"], "concept": f"c{g}"})
    path = root / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def test_calibrate_command_writes_a_calibration_the_searcher_uses(tmp_path, monkeypatch, tiny_encoder):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    manifest = _manifest(tmp_path / "val")
    out = tmp_path / "tiny.calibration.json"
    result = CliRunner().invoke(main, ["calibrate", str(manifest), "--model", TEST_MODEL, "--device", "cpu", "--out", str(out),
                                       "--check", str(manifest), "--index-dir", str(tmp_path / "check")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "text->image" in result.output and "raw_cosine" in result.output and f"wrote {out}" in result.output
    written = Calibration.from_json(out.read_text(encoding="utf-8"))
    assert written.model_id == tiny_encoder.model_id and set(written.offsets) == {"text->image", "image->text"}
    assert written.command.startswith(f"mmsearch calibrate {manifest}") and written.fitted_on["check"]["raw_cosine"]["queries"] == 8
    written.save(user_calibration_path(tiny_encoder.model_id))  # where an open_clip model's calibration lives
    searcher = Searcher(tmp_path / "check", tiny_encoder)
    try:
        assert searcher.calibration.offsets == written.offsets and searcher.info()["score_scale"] == CALIBRATED
    finally:
        searcher.close()


def test_calibrate_cross_fits_with_one_fold_model_per_manifest(tmp_path, monkeypatch, tiny_encoder):
    """--fold-model scores each manifest with its own model and writes the pooled fit for --model; the
    refit command in the file repeats the folds; a count that does not match the manifests is one clear error."""
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    a, b = _manifest(tmp_path / "a"), _manifest(tmp_path / "b")
    out = tmp_path / "tiny.calibration.json"
    args = ["calibrate", str(a), str(b), "--model", TEST_MODEL, "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--fold-model", TEST_MODEL, "--fold-model", TEST_MODEL])
    assert result.exit_code == 0, result.output
    written = Calibration.from_json(out.read_text(encoding="utf-8"))
    assert written.model_id == tiny_encoder.model_id and "cross-fitted" in written.fitted_on["method"]
    assert written.command.count("--fold-model") == 2
    result = CliRunner().invoke(main, [*args, "--fold-model", TEST_MODEL])
    assert result.exit_code != 0 and "--fold-model is needed once per manifest (2), not 1 times" in result.output


@pytest.mark.slow
def test_merged_lists_keep_the_matching_picture_and_text_with_the_real_model(tmp_path):
    """The done-when of issue 17 item 8 on a held-out set (the sample's OpenMoji pictures, a caption per
    picture as its own text item, the sample's notes): typing a picture's name, the top 20 of target all
    holds its picture as often as the top 10 of target image, and its caption as often as target text,
    up to 2 % of the queries: the offsets are fitted on other pictures (cross-fitted on the stamps) and
    carry over within about that. Measured with release 5497be071b25: raw cosines keep 53 of the 75
    pictures, the shipped calibration 74 of 75 (and 92/92 captions); with its hub channel (the shipped
    model now) raw cosines keep 2 of 77, the calibration 75 of 77 (92/92 captions); release 7de17accba62
    kept 75 of 75."""
    from indexer.pipeline import index_source
    from mmsearch.encoders import load_encoder

    sample = REPO / "data" / "sample"
    pictures = sorted(sample.glob("*/*.png"))
    names = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in pictures]
    rows = [{"image": str(p), "group": p.stem} for p in pictures]
    rows += [{"text": f"A picture of a {name}.", "group": p.stem} for p, name in zip(pictures, names)]
    rows += [{"text": n.read_text(encoding="utf-8").strip(), "group": f"note:{n.stem}"} for n in sorted((sample / "notes").glob("*.txt"))]
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    encoder = load_encoder("mmsearch-lite", "cpu", 32)
    index_source(items, tmp_path / "idx", lambda spec: encoder, model_spec="mmsearch-lite", default_model="mmsearch-lite", workers=0, progress=False)
    searcher = Searcher(tmp_path / "idx", encoder, reload_interval=0)
    try:
        assert searcher.calibration.offsets, "the shipped calibration was not loaded"
        pairs = C.PairSet([], [], [], [], names, [p.stem for p in pictures])
        calibrated = C.mixed_counts(searcher, pairs)
        searcher.use_calibration(RAW)
        raw = C.mixed_counts(searcher, pairs)
    finally:
        searcher.close()
    slack = math.ceil(0.02 * calibrated.queries)
    assert calibrated.image_in_all_top20 >= calibrated.image_in_image_top10 - slack, calibrated.row()
    assert calibrated.text_in_all_top20 >= calibrated.text_in_text_top10 - slack, calibrated.row()
    assert raw.image_in_all_top20 < raw.image_in_image_top10 - slack, raw.row()
