"""Integrity: checksummed vector files, clear errors naming a damaged file, and `mmsearch verify [--repair]`."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from mmsearch.hashing import sha256_file
from mmsearch.cli import main
from mmsearch.errors import IndexCorruptError
from mmsearch.vectors.index import VectorIndex
from mmsearch.storage.indexdir import IndexDir
from mmsearch.search import Searcher
from mmsearch.verify import repair_index, verify_index


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def vector_file(index_dir, modality: str = "image"):
    return index_dir / IndexDir(index_dir).read_manifest().vector_files[modality]


def stored_vectors(index_dir) -> dict[int, np.ndarray]:
    store = IndexDir(index_dir).open_store()
    try:
        return store.vectors_for([r.id for r in store.all_items()])
    finally:
        store.close()


def raw_db(index_dir) -> sqlite3.Connection:
    conn = sqlite3.connect(index_dir / "items.sqlite")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


def damage_file(path, damage: str):
    """Truncate it to half, flip one byte near the end (same size), or empty it."""
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) - 17] ^= 0xFF  # same size, one vector component changed
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    return path


def factory_of(encoder):
    return lambda spec: encoder


def test_manifest_records_a_checksum_per_vector_file(indexed):
    _, _, index_dir, _ = indexed
    manifest = IndexDir(index_dir).read_manifest()
    assert set(manifest.checksums) == set(manifest.vector_files.values())
    for name, digest in manifest.checksums.items():
        assert sha256_file(index_dir / name) == digest


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_vector_file_fails_to_open_naming_it(indexed, tiny_encoder, damage):
    _, _, index_dir, _ = indexed
    path = damage_file(vector_file(index_dir), damage)
    with pytest.raises(IndexCorruptError, match=path.name):
        Searcher(index_dir, tiny_encoder)
    result = invoke("search", "x", "--index-dir", index_dir)
    assert result.exit_code == 1 and path.name in result.output and "verify --repair" in result.output


def test_memory_mapped_load_does_not_hash_the_vector_files(indexed, tiny_encoder, monkeypatch):
    """mmap serving must not read a whole vector file to hash it at every (re)load."""
    _, _, index_dir, _ = indexed
    hashed = []
    monkeypatch.setattr("mmsearch.storage.checksums.sha256_file", lambda path: hashed.append(path) or "x")
    searcher = Searcher(index_dir, tiny_encoder, mmap=True)
    assert searcher.search_text("a", k=1) and hashed == []


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_memory_mapped_load_still_refuses_a_damaged_file(indexed, tiny_encoder, damage):
    _, _, index_dir, _ = indexed
    path = damage_file(vector_file(index_dir), damage)
    with pytest.raises(IndexCorruptError, match=path.name):
        Searcher(index_dir, tiny_encoder, mmap=True)


def test_damaged_database_fails_naming_it(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    db = index_dir / "items.sqlite"
    for extra in ("-wal", "-shm"):
        (index_dir / f"items.sqlite{extra}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(IndexCorruptError, match="items.sqlite"):
        Searcher(index_dir, tiny_encoder)
    report = verify_index(index_dir)
    assert not report.ok and report.problems[0].kind == "unreadable" and not report.problems[0].repairable
    assert invoke("verify", "--index-dir", index_dir).exit_code == 1


def test_healthy_index_verifies(indexed):
    _, _, index_dir, _ = indexed
    report = verify_index(index_dir)
    assert report.ok, report.problems
    assert report.counts["items"] == 9 and report.counts["image_vectors"] == 6 and report.counts["text_vectors"] == 3
    result = invoke("verify", "--index-dir", index_dir, "--json")
    assert result.exit_code == 0 and json.loads(result.output)["ok"] is True


def test_inconsistencies_are_found_and_repaired(indexed, tiny_encoder):
    _, files, index_dir, _ = indexed
    before = stored_vectors(index_dir)
    store = IndexDir(index_dir).open_store()
    ids = {r.path: r.id for r in store.all_items()}
    store.close()
    lost_image, lost_text = ids[str(files["img2"])], ids[str(files["bread"])]
    # rows without vectors, and a vector without a row
    with raw_db(index_dir) as conn:
        conn.execute("DELETE FROM embeddings WHERE item_id IN (?, ?)", (lost_image, lost_text))
        conn.execute("INSERT INTO embeddings (item_id, vector) VALUES (9999, ?)", (np.ones(64, np.float32).tobytes(),))
    # a FAISS file (with a valid checksum) holding an id with no row and missing one that has a row
    idx = IndexDir(index_dir)
    manifest = idx.read_manifest()
    image_index = VectorIndex.load(vector_file(index_dir))
    image_index.remove(np.array([ids[str(files["img4"])]]))
    image_index.add(np.array([8888]), np.ones((1, 64), np.float32) / 8)
    image_index.save(vector_file(index_dir))
    manifest.checksums[manifest.vector_files["image"]] = sha256_file(vector_file(index_dir))
    idx.write_manifest(manifest)
    (index_dir / "image.g1.deadbeef.faiss").write_bytes(b"left over by a killed run")

    kinds = {p.kind for p in verify_index(index_dir).problems}
    assert {"missing-embedding", "orphan-embedding", "faiss-orphan", "faiss-missing", "count-mismatch", "stray-file"} <= kinds
    result = invoke("verify", "--index-dir", index_dir)
    assert result.exit_code == 1 and "8888" in result.output and "9999" in result.output

    report = repair_index(index_dir, factory_of(tiny_encoder))
    assert report.ok, report.problems
    assert any("re-embedded 2 items" in line for line in report.repaired)
    after = stored_vectors(index_dir)
    assert set(after) == set(before)  # the orphan is gone, nothing else
    for item_id in (lost_image, lost_text):  # re-embedded from the source file, with the index's own model
        assert np.allclose(after[item_id], before[item_id], atol=1e-5)
    assert not (index_dir / "image.g1.deadbeef.faiss").exists()
    searcher = Searcher(index_dir, tiny_encoder)
    try:
        hits = searcher.search_vectors(before[lost_image][None, :], "image", k=1)[0]
        assert hits[0].id == lost_image
    finally:
        searcher.close()
    assert invoke("verify", "--index-dir", index_dir).exit_code == 0


def test_repair_drops_items_whose_source_is_gone(indexed, tiny_encoder):
    _, files, index_dir, _ = indexed
    store = IndexDir(index_dir).open_store()
    gone = {r.path: r.id for r in store.all_items()}[str(files["img3"])]
    store.close()
    files["img3"].unlink()
    with raw_db(index_dir) as conn:
        conn.execute("DELETE FROM embeddings WHERE item_id = ?", (gone,))
    report = repair_index(index_dir, factory_of(tiny_encoder))
    assert report.ok, report.problems
    assert any(line.startswith(f"dropped item {gone}") for line in report.repaired)
    assert gone not in stored_vectors(index_dir)


def test_damaged_vector_file_is_rebuilt_by_repair_via_cli(indexed):
    _, _, index_dir, _ = indexed
    path = vector_file(index_dir, "text")
    path.write_bytes(path.read_bytes()[:40])
    result = invoke("verify", "--index-dir", index_dir)
    assert result.exit_code == 1 and "checksum mismatch" in result.output
    result = invoke("verify", "--index-dir", index_dir, "--repair")
    assert result.exit_code == 0, result.output
    assert "rewrote the vector files" in result.output
    assert verify_index(index_dir).ok


def test_interrupted_run_shows_as_stale_until_repaired(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    store = IndexDir(index_dir).open_store()
    try:
        store.delete_items([store.all_items()[0].id])  # a write that no publish followed, as after a kill
    finally:
        store.close()
    assert {p.kind for p in verify_index(index_dir).problems} == {"stale-vectors"}
    report = repair_index(index_dir, factory_of(tiny_encoder))
    assert report.ok and report.counts["items"] == 8


def test_damaged_manifest_fails_naming_it(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    manifest = index_dir / "manifest.json"
    manifest.write_text(manifest.read_text()[:50], encoding="utf-8")  # cut short mid-write
    with pytest.raises(IndexCorruptError, match="manifest.json"):
        Searcher(index_dir, tiny_encoder)
    report = verify_index(index_dir)
    assert [p.kind for p in report.problems] == ["unreadable"] and "manifest.json" in report.problems[0].detail
    assert invoke("verify", "--index-dir", index_dir, "--repair").exit_code == 1  # nothing it can rebuild that from
