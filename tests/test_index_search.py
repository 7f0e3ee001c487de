"""Indexing a folder and searching it: the behaviour users rely on."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import make_corpus, pattern_image, run_index
from mmsearch.writer import IndexWriter
from mmsearch.errors import IndexNotFoundError, ModelMismatchError
from mmsearch.storage.indexdir import IndexDir
from mmsearch.search import Searcher


def paths_of(hits):
    return [h.path for h in hits]


def test_image_query_returns_itself_first(indexed, tiny_encoder):
    root, files, index_dir, report = indexed
    assert report.failures == []
    searcher = Searcher(index_dir, tiny_encoder)
    for name in ("img0", "img3", "img5"):
        hits = searcher.search_image(Image.open(files[name]).convert("RGB"), "image", k=3)
        assert hits[0].path == str(files[name])
        assert hits[0].score > 0.99
        assert hits[1].score < hits[0].score


def test_text_item_found_by_its_own_text(indexed, tiny_encoder):
    root, files, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    body = files["bread"].read_text()
    hits = searcher.search_text(body, "text", k=3)
    assert hits[0].path == str(files["bread"])
    assert hits[0].modality == "text" and hits[0].text == body
    assert hits[0].score > 0.99


def test_targets_select_modalities(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    assert {h.modality for h in searcher.search_text("sea", "image", k=20)} == {"image"}
    assert {h.modality for h in searcher.search_text("sea", "text", k=20)} == {"text"}
    both = searcher.search_text("sea", "all", k=20)
    assert {h.modality for h in both} == {"image", "text"}
    assert len(both) == 9  # 6 images + 3 texts, all of them
    assert [h.score for h in both] == sorted((h.score for h in both), reverse=True)


def test_sidecar_caption_is_the_images_text_not_an_item(indexed, tiny_encoder):
    root, files, index_dir, report = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    items = {r.path: r for r in searcher.store.all_items()}
    assert items[str(files["img0"])].text == "a caption for the first image"
    assert str(root / "img0.txt") not in items
    assert report.counts == {"image": 6, "text": 3}


def test_reindexing_unchanged_folder_embeds_nothing(indexed):
    root, _, index_dir, _ = indexed
    report = run_index(root, index_dir, encoder=False)  # loading the model at all would fail the test
    assert report.embedded == 0 and report.unchanged == 9 and report.removed == 0


def test_deleted_file_disappears(indexed, tiny_encoder):
    root, files, index_dir, _ = indexed
    gone = files["img3"]
    gone.unlink()
    report = run_index(root, index_dir, encoder=False)
    assert report.removed == 1
    searcher = Searcher(index_dir, tiny_encoder)
    hits = searcher.search_image(pattern_image(3), "all", k=50)
    assert str(gone) not in paths_of(hits)
    assert len(hits) == 8
    assert str(gone) not in {r.path for r in searcher.store.all_items()}


def test_renamed_file_keeps_its_vector_without_reembedding(indexed, tiny_encoder):
    root, files, index_dir, _ = indexed
    before = {r.path: r.id for r in Searcher(index_dir, tiny_encoder).store.all_items()}
    old = files["img2"]
    new = root / "moved" / "renamed.jpg"
    new.parent.mkdir()
    os.rename(old, new)
    report = run_index(root, index_dir, encoder=False)
    assert (report.moved, report.embedded, report.removed) == (1, 0, 0)
    searcher = Searcher(index_dir, tiny_encoder)
    hits = searcher.search_image(Image.open(new).convert("RGB"), "image", k=1)
    assert hits[0].path == str(new) and hits[0].id == before[str(old)] and hits[0].score > 0.99


def test_changed_file_is_reembedded_under_the_same_id(indexed, tiny_encoder):
    root, files, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    old_id = {r.path: r.id for r in searcher.store.all_items()}[str(files["img4"])]
    pattern_image(404).save(files["img4"])
    report = run_index(root, index_dir, tiny_encoder)
    assert report.reembedded == 1 and report.added == 0
    searcher = Searcher(index_dir, tiny_encoder)
    hit = searcher.search_image(pattern_image(404), "image", k=1)[0]
    assert hit.id == old_id and hit.score > 0.99
    assert searcher.info()["counts"] == {"image": 6, "text": 3}  # replaced, not duplicated


def test_corrupt_image_is_reported_and_good_ones_indexed(tmp_path, tiny_encoder):
    root = tmp_path / "c"
    files = make_corpus(root)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    data = files["img1"].read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    report = run_index(root, tmp_path / "i", tiny_encoder, batch_size=2)
    failed = dict(report.failures)
    assert set(failed) == {str(root / "broken.jpg"), str(root / "truncated.png"), str(root / "empty.png")}
    assert all(reason for reason in failed.values())
    assert report.counts == {"image": 6, "text": 3}
    # no metadata slid onto a neighbour's vector: every image still finds itself under its own path
    searcher = Searcher(tmp_path / "i", tiny_encoder)
    for i in range(6):
        hit = searcher.search_image(Image.open(files[f"img{i}"]).convert("RGB"), "image", k=1)[0]
        assert hit.path == str(files[f"img{i}"]) and hit.score > 0.99
    assert dict(searcher.store.failures()) == failed


def test_manifest_rows_become_items_with_metadata(tmp_path, tiny_encoder):
    root = tmp_path / "m"
    (root / "pics").mkdir(parents=True)
    pattern_image(1).save(root / "pics" / "a.png")
    pattern_image(2).save(root / "pics" / "b.png")
    rows = [
        {"id": "p1", "image": "pics/a.png", "caption": "a blue thing", "price": 12.5},
        {"id": "p2", "image": "pics/b.png", "caption": "a red thing", "price": 80},
        {"id": "t1", "text": "a product description with no picture", "brand": "acme"},
    ]
    (root / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (root / "other.csv").write_text("image_path,title,color\npics/a.png,same picture again,blue\n")
    report = run_index(root, tmp_path / "i", tiny_encoder)
    assert report.failures == []
    searcher = Searcher(tmp_path / "i", tiny_encoder)
    items = {r.key.split("#")[-1]: r for r in searcher.store.all_items() if "#" in r.key}
    assert items["p1"].text == "a blue thing" and items["p1"].meta["price"] == 12.5
    assert items["t1"].modality == "text" and items["t1"].meta["brand"] == "acme"
    assert items["line2"].meta["color"] == "blue"
    # manifest rows claim their images: the bare files are not indexed a second time
    assert report.counts == {"image": 3, "text": 1}


def test_index_with_other_model_is_a_clear_error(indexed):
    root, _, index_dir, _ = indexed
    with pytest.raises(ModelMismatchError, match="built with model"):
        run_index(root, index_dir, encoder=False, model="ViT-B-32:openai")


def test_searcher_rejects_encoder_of_another_model(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    manifest = IndexDir(index_dir).read_manifest()
    manifest.model_id = "some-other-model@123"
    IndexDir(index_dir).write_manifest(manifest)
    with pytest.raises(ModelMismatchError):
        Searcher(index_dir, tiny_encoder)


@pytest.mark.parametrize("built, asked, says", [
    # a new release of the default model's weights: the index must be built again, and the error says so
    ("mmsearch-lite@4329569433b3+colour-e119954e", "mmsearch-lite@7de17accba62+colour-e119954e", "weights differ"),
    ("mmsearch-lite@4329569433b3", "mmsearch-lite@4329569433b3+colour-e119954e", "differ only in mmsearch-lite's channels"),
    ("mmsearch-lite@5497be071b25+colour-e119954e", "mmsearch-lite@5497be071b25+colour-e119954e+hubs-c3583a7d", "MMSEARCH_HUBS"),
    ("ViT-B-32@openai", "mmsearch-lite@7de17accba62", "use the same --model"),
])
def test_a_model_mismatch_says_what_to_do(built, asked, says):
    from mmsearch.storage.indexdir import Manifest

    with pytest.raises(ModelMismatchError, match=says):
        IndexDir.check_model(Manifest(model_spec="x", model_id=built, dim=4), asked)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFoundError, match="no index at"):
        Searcher(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_interrupted_run_keeps_old_index_and_next_run_finishes(tmp_path, tiny_encoder, monkeypatch):
    root = tmp_path / "c"
    files = make_corpus(root, n_images=4)
    index_dir = tmp_path / "i"
    run_index(root, index_dir, tiny_encoder)
    for i in range(4, 12):
        pattern_image(i).save(root / f"new{i}.jpg")

    calls = {"n": 0}
    real_add = IndexWriter.add

    def dying_add(self, items, vectors):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands in for the process being killed mid-run
        return real_add(self, items, vectors)

    monkeypatch.setattr(IndexWriter, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):
        run_index(root, index_dir, tiny_encoder, batch_size=3)
    monkeypatch.setattr(IndexWriter, "add", real_add)

    # the previous version is still searchable, and consistent with the database
    searcher = Searcher(index_dir, tiny_encoder)
    assert searcher.search_image(Image.open(files["img1"]).convert("RGB"), "image", k=1)[0].path == str(files["img1"])
    stored = {r.id for r in searcher.store.all_items() if r.modality == "image"}
    assert set(searcher._snapshot.indexes["image"].ids()) == stored

    report = run_index(root, index_dir, tiny_encoder, batch_size=3)
    assert report.added == 8 - 3  # the first committed batch of 3 is not embedded again
    searcher = Searcher(index_dir, tiny_encoder)
    assert searcher.info()["counts"]["image"] == 12
    keys = [r.key for r in searcher.store.all_items()]
    assert len(keys) == len(set(keys)) == 15


def test_running_searcher_picks_up_a_new_index_version(indexed, tiny_encoder):
    root, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder, reload_interval=0)
    pattern_image(77).save(root / "late.png")
    run_index(root, index_dir, tiny_encoder)
    hit = searcher.search_image(pattern_image(77), "image", k=1)[0]
    assert hit.path == str(root / "late.png") and hit.score > 0.99


def test_stale_vector_files_are_rebuilt_from_the_database(indexed, tiny_encoder):
    _, files, index_dir, _ = indexed
    idx = IndexDir(index_dir)
    manifest = idx.read_manifest()
    for name in manifest.vector_files.values():
        (index_dir / name).unlink()  # as if a run died before publishing
    manifest.generation -= 1
    idx.write_manifest(manifest)
    searcher = Searcher(index_dir, tiny_encoder)
    hit = searcher.search_image(Image.open(files["img2"]).convert("RGB"), "image", k=1)[0]
    assert hit.path == str(files["img2"])


def test_vectors_match_a_fresh_encoding(indexed, tiny_encoder):
    root, files, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    record = {r.path: r for r in searcher.store.all_items()}[str(files["sea"])]
    stored = searcher.store.vectors_for([record.id])[record.id]
    fresh = tiny_encoder.encode_texts([files["sea"].read_text()])[0]
    assert np.allclose(stored, fresh, atol=1e-5)


def test_a_search_reads_only_the_rows_of_its_answer_unless_it_must_look_deeper(indexed, tiny_encoder):
    """The rows of k hits are read, not the k * OVERFETCH candidates kept for grouping video frames; an
    item deleted from the database while its vector is still served makes way for the next candidate."""
    _, files, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    query = Image.open(files["img2"]).convert("RGB")
    expected = [(h.id, h.path) for h in searcher.search_image(query, "image", k=4)]
    reads: list[int] = []
    get_many = searcher.store.get_many
    searcher.store.get_many = lambda ids: (reads.extend(ids), get_many(ids))[1]
    assert [(h.id, h.path) for h in searcher.search_image(query, "image", k=2)] == expected[:2]
    assert sorted(reads) == sorted(i for i, _ in expected[:2])

    searcher.store.delete_items([expected[0][0]])  # gone from the rows, still in the loaded vector index
    reads.clear()
    assert [(h.id, h.path) for h in searcher.search_image(query, "image", k=2)] == expected[1:3]
    assert len(reads) > 2  # the deeper candidates were read to fill the answer
    searcher.close()
