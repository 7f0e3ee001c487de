"""Product-quantised indexes re-rank their candidates on the stored vectors: recall the codes alone
cannot reach, exact scores, filters kept, and the Searcher does it end to end."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from sqlalchemy import text as sql

from bench.synthetic_index import build_synthetic_index
from bench.vectors import Mixture
from mmsearch.vectors import ann, rerank
from mmsearch.vectors.ann import AnnOptions
from mmsearch.encoders import TEST_MODEL
from mmsearch.storage.filters import condition
from mmsearch.storage.indexdir import IndexDir, describe
from mmsearch.query import Query, QueryEngine, Term
from mmsearch.search import Searcher

DIM = 64  # the tiny test model's width, so the end-to-end index can be queried through the model too
N = 6_000
TARGET = 0.95


@pytest.fixture(scope="module")
def mixture() -> Mixture:
    return Mixture(DIM, clusters=64, seed=5)


@pytest.fixture(scope="module")
def data(mixture) -> tuple[np.ndarray, np.ndarray]:
    ids, vecs = zip(*mixture.batches(N, seed=1, batch=3_000))
    return np.concatenate(ids), np.concatenate(vecs)


@pytest.fixture(scope="module")
def tuned_pq(data):
    """The ivfpq index mmsearch would build, tuned with re-ranking on an in-memory copy of the vectors."""
    ids, vectors = data
    batches = ann.array_batches(ids, vectors)
    index = ann.build_index(DIM, ann.choose_factory("ivfpq", N, DIM, 0), batches, N)
    tuning = ann.tune_index(index, batches, TARGET, vectors_for=rerank.array_source(ids, vectors))
    return index, tuning


def exact_ids(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]


def test_product_quantised_factories_are_the_ones_reranked():
    assert rerank.needs_rerank(ann.choose_factory("ivfpq", 10**6, 768)) and rerank.needs_rerank("OPQ16_64,IVF256,PQ16")
    kinds = ("auto", "ivf", "hnsw", "flat", "sq8")  # SQ8: re-ranking does not change its recall (bench/README.md)
    assert not any(rerank.needs_rerank(ann.choose_factory(kind, 10**6, 768)) for kind in kinds)


def test_reranking_reaches_the_recall_the_codes_alone_miss(tuned_pq, data, mixture):
    index, tuning = tuned_pq
    ids, vectors = data
    factor = rerank.factor_of(tuning.params)
    assert tuning.met and factor >= 1 and tuning.recall >= TARGET
    queries = mixture.sample(300, seed=77)  # fresh queries, never seen by the tuning
    truth = exact_ids(vectors, ids, queries, 10)
    source = rerank.array_source(ids, vectors)
    with_rerank = ann.recall_at_k(rerank.search(index, queries, 10, factor, source)[1], truth)
    codes_only = ann.recall_at_k(index.search(queries, 10)[1], truth)  # the same index and nprobe, no re-rank
    assert with_rerank >= TARGET > codes_only + 0.05
    ann.set_search_params(index, {"nprobe": faiss.extract_index_ivf(ann._base(index.native)).nlist})
    try:  # the codes are the limit: even probing every list they miss the target
        assert ann.recall_at_k(index.search(queries, 10)[1], truth) < TARGET - 0.03
    finally:
        ann.set_search_params(index, tuning.params)


def test_a_pq_index_tuned_without_reranking_is_retuned(tuned_pq, data):
    index, tuning = tuned_pq
    ids, vectors = data
    older = {**tuning.to_dict(), "params": {"nprobe": tuning.params["nprobe"]}}  # as an older mmsearch recorded it
    _, retuned = ann.maintain(DIM, index, ann.array_batches(ids, vectors), AnnOptions("ivfpq", TARGET, 0), older,
                              rerank.array_source(ids, vectors))
    assert retuned["params"] == tuning.params
    _, kept = ann.maintain(DIM, index, ann.array_batches(ids, vectors), AnnOptions("ivfpq", TARGET, 0), retuned)
    assert kept is retuned


def test_reranked_scores_are_exact_inner_products(tuned_pq, data, mixture):
    index, tuning = tuned_pq
    ids, vectors = data
    queries = mixture.sample(20, seed=78)
    scores, found = rerank.search(index, queries, 10, rerank.factor_of(tuning.params), rerank.array_source(ids, vectors))
    assert (found >= 1).all()
    exact = np.einsum("qd,qkd->qk", queries, vectors[found - 1])  # ids are 1..N in row order
    np.testing.assert_allclose(scores, exact, rtol=0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    approximate, _ = index.search(queries, 10)
    assert np.abs(approximate - np.einsum("qd,qkd->qk", queries, vectors[index.search(queries, 10)[1] - 1])).max() > 1e-3


def test_rerank_drops_ids_the_store_no_longer_has_and_pads():
    query = np.array([[1.0, 0.0]], np.float32)
    vectors = {1: np.array([0.6, 0.8], np.float32), 2: np.array([1.0, 0.0], np.float32)}
    scores, found = rerank.rerank(query, np.array([[1, 3, 2, -1]]), lambda ids: {i: vectors[i] for i in ids if i in vectors}, 3)
    assert found.tolist() == [[2, 1, -1]]
    np.testing.assert_allclose(scores[0, :2], [1.0, 0.6])


@pytest.fixture(scope="module")
def pq_dir(tmp_path_factory, mixture):
    """An ivfpq index directory written by the real writer (tuning reads the store's vectors)."""
    path = tmp_path_factory.mktemp("pq") / "idx"
    build_synthetic_index(path, DIM, mixture.batches(N, seed=1, batch=3_000), model_spec=TEST_MODEL, model_id=TEST_MODEL,
                          options=AnnOptions("ivfpq", TARGET, flat_threshold=1_000))
    store = IndexDir(path).open_store()
    try:
        with store.engine.begin() as conn:  # a metadata field to filter on: a third of the items each
            conn.execute(sql("UPDATE items SET meta = json_object('shard', id % 3)"))
    finally:
        store.close()
    return path


def test_searcher_reranks_a_pq_index_and_finds_the_stored_vector_first(pq_dir, data):
    ids, vectors = data
    facts = describe(pq_dir)
    assert facts["index_factory"]["image"].endswith("np") and "PQ" in facts["index_factory"]["image"]
    factor = facts["search_params"]["image"][rerank.PARAM]
    assert factor >= 1 and facts["tuned_recall"]["image"] >= TARGET
    searcher = Searcher(pq_dir, reload_interval=0)
    try:
        probes = [1, 777, 4_321, N]
        for item_id, hits in zip(probes, searcher.search_vectors(vectors[np.array(probes) - 1], "image", 10)):
            assert hits[0].id == item_id and hits[0].score == pytest.approx(1.0, abs=1e-5)
            exact = vectors[np.array([h.id for h in hits]) - 1] @ vectors[item_id - 1]
            np.testing.assert_allclose([h.score for h in hits], exact, atol=1e-5)
    finally:
        searcher.close()


def test_filtered_search_on_a_pq_index_stays_in_the_filter_and_is_reranked(pq_dir, data, monkeypatch):
    monkeypatch.setattr("mmsearch.query.EXACT_FALLBACK_MAX", 0)  # only the re-rank can make the scores exact
    ids, vectors = data
    searcher = Searcher(pq_dir, reload_interval=0)
    try:
        engine = QueryEngine(searcher)
        for probe in (2, 1_001, 5_000):  # shard of probe: 2, 2, 2 -> the probe is excluded as a query term
            result = engine.run(Query([Term(item_id=probe)], [condition("shard", "eq", 1)], limit=20))
            returned = [h.id for h in result.hits]
            assert len(returned) == 20 and all(i % 3 == 1 for i in returned)
            in_filter = ids[ids % 3 == 1]
            truth = in_filter[np.argsort(-(vectors[in_filter - 1] @ vectors[probe - 1]))[:20]]
            assert len(set(returned) & set(truth.tolist())) >= 16  # the selector searches the tuned nprobe lists only
            exact = vectors[np.array(returned) - 1] @ vectors[probe - 1]
            np.testing.assert_allclose([h.vector_score for h in result.hits], exact, atol=1e-5)
    finally:
        searcher.close()
