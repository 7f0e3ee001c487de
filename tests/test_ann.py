"""Approximate search: exact below the threshold, tuned ANN above it, deletes and reopen still right."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.synthetic_index import build_synthetic_index
from bench.vectors import Mixture
from mmsearch.writer import IndexWriter
from mmsearch.vectors import ann
from mmsearch.vectors.ann import AnnOptions
from mmsearch.errors import ConfigError
from mmsearch.storage.indexdir import IndexDir, describe
from mmsearch.search import Searcher

DIM = 64
N = 20_000


@pytest.fixture(scope="module")
def mixture() -> Mixture:
    return Mixture(DIM, clusters=64, seed=3)


def exact_ids(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    return ids[np.argsort(-scores, axis=1)[:, :k]]


def recall(searcher: Searcher, queries: np.ndarray, truth: np.ndarray) -> float:
    hits = searcher.search_vectors(queries, "image", truth.shape[1])
    found = np.array([[h.id for h in row] for row in hits])
    return ann.recall_at_k(found, truth)


def build(path, mixture, n, index_type="auto", threshold=5_000, target=0.95):
    return build_synthetic_index(
        path, DIM, mixture.batches(n, seed=1, batch=5_000), model_spec="mmsearch-tiny-random", model_id="synthetic",
        options=AnnOptions(index_type, target, threshold),
    )


def all_vectors(mixture, n):
    ids, vecs = zip(*mixture.batches(n, seed=1, batch=5_000))
    return np.concatenate(ids), np.concatenate(vecs)


def test_auto_choice_is_exact_below_threshold_and_ann_above():
    assert ann.choose_factory("auto", 49_999, 384, 50_000) == "Flat"
    assert ann.choose_factory("auto", 50_000, 384, 50_000).startswith("IVF")
    assert ann.choose_factory("hnsw", 10, 384, 50_000) == "HNSW32,Flat"
    assert ann.choose_factory("ivfpq", 10**6, 384, 50_000) == "IVF4096_HNSW32,PQ192np"
    assert ann.choose_factory("flat", 10**7, 384, 50_000) == "Flat"
    assert ann.choose_factory("IVF64,SQ8", 10, 384) == "IVF64,SQ8"
    with pytest.raises(ConfigError):
        ann.choose_factory("not-an-index", 10, 384)


def test_small_collection_stays_exact(tmp_path, mixture):
    built = build(tmp_path / "idx", mixture, 3_000)
    assert built["manifest"]["index_factory"]["image"] == "Flat"
    assert describe(tmp_path / "idx")["search_params"] == {}


@pytest.mark.parametrize("index_type", ["auto", "hnsw"])
def test_tuned_ann_meets_recall_on_held_out_queries_and_forgets_deletes(tmp_path, mixture, index_type):
    path = tmp_path / "idx"
    built = build(path, mixture, N, index_type=index_type)
    factory = built["manifest"]["index_factory"]["image"]
    assert factory.startswith("IVF" if index_type == "auto" else "HNSW")
    facts = describe(path)
    assert facts["tuned_recall"]["image"] >= 0.95 and facts["search_params"]["image"]

    ids, vectors = all_vectors(mixture, N)
    queries = mixture.sample(300, seed=999)  # never seen by the tuning
    searcher = Searcher(path, reload_interval=0)
    try:
        assert recall(searcher, queries, exact_ids(vectors, ids, queries, 10)) >= 0.95
        before = [[h.id for h in row] for row in searcher.search_vectors(queries[:20], "image", 10)]
    finally:
        searcher.close()

    for mmap in (False, True):
        reopened = Searcher(path, reload_interval=0, mmap=mmap)
        try:  # a reopened (or memory-mapped) index answers exactly as the one that was written
            assert [[h.id for h in row] for row in reopened.search_vectors(queries[:20], "image", 10)] == before
        finally:
            reopened.close()

    # delete 500 items, among them the nearest neighbours of the probe queries
    gone = set(np.unique(np.array(before)[:, :3]).tolist()) | set(range(1, 501))
    idx = IndexDir(path)
    store = idx.open_store()
    try:
        writer = IndexWriter(idx, idx.read_manifest(), store)
        writer.delete([store.get(i) for i in sorted(gone)])
        writer.publish()
    finally:
        store.close()
    searcher = Searcher(path, reload_interval=0)
    try:
        probes = np.concatenate([queries[:20], vectors[:50]])  # the deleted vectors themselves as queries too
        returned = {h.id for row in searcher.search_vectors(probes, "image", 20) for h in row}
        assert not returned & gone
        keep = ~np.isin(ids, list(gone))
        assert recall(searcher, queries, exact_ids(vectors[keep], ids[keep], queries, 10)) >= 0.93
        assert searcher.info()["counts"]["image"] == N - len(gone)
    finally:
        searcher.close()


def test_switches_to_ann_when_the_collection_crosses_the_threshold(tmp_path, mixture):
    path = tmp_path / "idx"
    build(path, mixture, 4_000, threshold=8_000)
    assert IndexDir(path).read_manifest().index_factory["image"] == "Flat"
    from bench.synthetic_index import bulk_insert

    more = ((ids + 4_000, vecs) for ids, vecs in mixture.batches(8_000, seed=2, batch=4_000))
    bulk_insert(IndexDir(path), more)
    idx = IndexDir(path)
    store = idx.open_store()
    try:
        IndexWriter(idx, idx.read_manifest(), store, AnnOptions("auto", 0.95, 8_000)).publish()
    finally:
        store.close()
    manifest = IndexDir(path).read_manifest()
    assert manifest.index_factory["image"].startswith("IVF")
    assert manifest.ann["image"]["recall"] >= 0.95 and manifest.counts["image"] == 12_000


@pytest.mark.slow
def test_pq_index_is_small_and_still_finds_most_neighbours(mixture):
    n = 5_000
    ids, vectors = all_vectors(mixture, n)
    index, tuning = ann.build_and_tune(DIM, ann.choose_factory("ivfpq", n, DIM, 0), ann.array_batches(ids, vectors), n, target=0.75)
    assert ann.index_bytes(index) < 0.5 * ann.raw_bytes(n, DIM)  # ids (8 bytes each) weigh a lot at 64 dimensions
    assert tuning.met and tuning.recall >= 0.75


def test_cli_index_type_is_kept_and_reported(tmp_path):
    from click.testing import CliRunner

    from conftest import make_corpus
    from mmsearch.cli import main
    from mmsearch.encoders import TEST_MODEL

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    root, idx = tmp_path / "c", tmp_path / "idx"
    files = make_corpus(root)
    result = invoke("index", root, "--index-dir", idx, "--model", TEST_MODEL, "--workers", "0", "--index-type", "hnsw",
                    "--recall-target", "0.9")
    assert result.exit_code == 0, result.output
    facts = json.loads(invoke("info", "--index-dir", idx, "--json").output)
    assert facts["index_type"] == "hnsw" and facts["recall_target"] == 0.9
    assert facts["index_factory"]["image"] == "HNSW32,Flat"

    files["img2"].unlink()  # a delete from an index type that cannot remove: rebuilt from the store
    result = invoke("index", root, "--index-dir", idx)
    assert result.exit_code == 0 and "1 removed" in result.output
    facts = json.loads(invoke("info", "--index-dir", idx, "--json").output)
    assert facts["index_type"] == "hnsw" and facts["counts"]["image"] == 5 and facts["vectors_up_to_date"]
    hits = json.loads(invoke("search", "--image", files["img0"], "-k", "10", "--index-dir", idx, "--json").output)["hits"]
    assert len(hits) == 5 and all("img2" not in h["path"] for h in hits)

    result = invoke("index", root, "--index-dir", idx, "--index-type", "IVF-nonsense")
    assert result.exit_code == 1 and "neither one of" in result.output


@pytest.mark.parametrize("factory", ["IVF64_HNSW32,Flat", "HNSW32,Flat", "IVF64,SQ8", "Flat"])
def test_subset_search_works_on_every_index_family_with_its_tuned_knob(mixture, factory):
    n = 3_000
    ids, vectors = all_vectors(mixture, n)
    index = ann.build_index(DIM, factory, ann.array_batches(ids, vectors), n)
    knob = {"ivf": {"nprobe": 64}, "hnsw": {"efSearch": 128}}.get(ann.family(factory), {})
    ann.set_search_params(index, knob)  # IVF: every list, so the subset search must be exact
    subset = ids[ids % 5 == 0]
    queries = mixture.sample(20, seed=11)
    _, found = index.search_subset(queries, 10, subset)
    assert (found % 5 == 0).all()
    assert ann.recall_at_k(found, exact_ids(vectors[subset - 1], subset, queries, 10)) >= (0.98 if "IVF" in factory else 0.9)
