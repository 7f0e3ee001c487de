"""Concurrent queries share model calls in the server and each still gets its own embedding."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bench.photos import make_photo
from mmsearch.batching import BatchingEncoder, MicroBatcher


class CountingEncoder:
    """Delegates to the tiny model, counting model calls and making each one slow enough to overlap."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.dim = inner, 0, inner.dim
        self.gate = threading.Event()
        self.in_first_call = 0

    def encode_texts(self, texts):
        self.calls += 1
        if self.calls == 1:
            self.in_first_call = len(texts)
        self.gate.wait(5)  # the first call holds until every query is queued
        return self.inner.encode_texts(texts)

    def encode_images(self, images):
        self.calls += 1
        return self.inner.encode_images(images)


def test_concurrent_texts_are_batched_and_each_gets_its_own_rows(tiny_encoder):
    counting = CountingEncoder(tiny_encoder)
    front = BatchingEncoder(counting)
    texts = [f"query number {i}" for i in range(12)]
    try:
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(front.encode_texts, [t]) for t in texts]
            for _ in range(1000):  # until every query is inside the (gated) first call or queued
                if counting.in_first_call + front._batcher._queue.qsize() == len(texts):
                    break
                threading.Event().wait(0.01)
            counting.gate.set()
            rows = [f.result(timeout=30) for f in futures]
        assert counting.calls <= 3  # 12 queries, at most a handful of model calls
        expected = tiny_encoder.encode_texts(texts)
        np.testing.assert_allclose(np.concatenate(rows), expected, atol=1e-5)
        image = make_photo(3, (120, 90))
        np.testing.assert_allclose(front.encode_images([image]), tiny_encoder.encode_images([image]), atol=1e-5)
        assert front.dim == tiny_encoder.dim  # everything else is read through to the wrapped encoder
    finally:
        front.close()


def test_a_failing_batch_fails_its_callers_and_the_worker_survives(tiny_encoder):
    class Flaky:
        dim = tiny_encoder.dim
        fail = True

        def encode_texts(self, texts):
            if self.fail:
                self.fail = False
                raise ValueError("boom")
            return tiny_encoder.encode_texts(texts)

    front = BatchingEncoder(Flaky())
    try:
        with pytest.raises(ValueError, match="boom"):
            front.encode_texts(["a"])
        assert front.encode_texts(["b"]).shape == (1, tiny_encoder.dim)
        assert front.encode_texts([]).shape == (0, tiny_encoder.dim)
    finally:
        front.close()


def test_concurrent_text_searches_share_one_search_and_each_gets_its_own_answer(indexed, tiny_encoder):
    from mmsearch.errors import InvalidQueryError
    from mmsearch.search import Searcher

    _, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    alone = {(q, k): [h.id for h in searcher.search_text(q, "all", k)] for q, k in [("red", 2), ("blue", 5), ("green", 1), ("red", 4), ("a cat", 3), ("x", 6)]}
    calls = []
    original = searcher.search_vectors

    def counted(queries, target="image", k=10, query_modality=None):
        calls.append(len(queries))
        threading.Event().wait(0.2)  # long enough for the other callers to queue behind the first call
        return original(queries, target, k, query_modality=query_modality)

    searcher.search_vectors = counted
    searcher.batch_text_queries()
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = {key: pool.submit(searcher.search_text, key[0], "all", key[1]) for key in alone}
            bad = pool.submit(searcher.search_text, "   ", "all", 3)
            answers = {key: [h.id for h in f.result(timeout=30)] for key, f in futures.items()}
        assert answers == alone  # each caller gets its own k and its own hits
        assert len(calls) <= 2 and sum(calls) == len(alone)  # one call, then one for everything queued behind it
        with pytest.raises(InvalidQueryError):
            bad.result(timeout=30)  # an empty query fails its own caller, not the batch it would have joined
    finally:
        searcher.close()


def test_the_next_queries_are_embedded_while_a_batch_is_searched(indexed, tiny_encoder):
    """The two stages overlap: a vector search in progress does not hold up embedding the queries that
    arrive meanwhile (with one worker for both, the second query would wait for the first search)."""
    from mmsearch.search import Searcher

    _, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    embedded, searching, release = [], threading.Event(), threading.Event()
    encode, search = tiny_encoder.encode_texts, searcher.search_vectors

    class Watched:
        model_id, dim = tiny_encoder.model_id, tiny_encoder.dim

        def encode_texts(self, texts):
            embedded.extend(texts)
            return encode(texts)

    def held_search(*args, **kwargs):
        searching.set()
        release.wait(30)  # longer than the test waits for the second query's embedding
        return search(*args, **kwargs)

    searcher._encoder = Watched()
    searcher.search_vectors = held_search
    searcher.batch_text_queries()
    try:
        first = searcher.text_search_future("red", "image", 2)
        assert searching.wait(10)
        second = searcher.text_search_future("blue", "image", 2)
        deadline = time.monotonic() + 5
        while "blue" not in embedded and time.monotonic() < deadline:
            time.sleep(0.01)
        assert embedded == ["red", "blue"] and not first.done()  # embedded while the first is still searched
        release.set()
        assert [h.id for h in first.result(10)[0]] == [h.id for h in searcher.search_texts(["red"], "image", 2)[0]]
        assert second.result(10)[0]
    finally:
        release.set()
        searcher.close()


def test_chained_stages_pass_on_errors_and_cancellation():
    from concurrent.futures import CancelledError, Future

    from mmsearch.batching import chained

    def done(value=None, error=None) -> Future:
        f: Future = Future()
        f.set_exception(error) if error else f.set_result(value)
        return f

    assert chained(done(2), lambda v: done(v * 10)).result(1) == 20
    with pytest.raises(ValueError, match="first"):
        chained(done(error=ValueError("first")), lambda v: done(v)).result(1)
    with pytest.raises(ValueError, match="second"):
        chained(done(1), lambda v: done(error=ValueError("second"))).result(1)

    def refuses(_):
        raise RuntimeError("the batching worker has stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        chained(done(1), refuses).result(1)
    pending: Future = Future()
    started = []
    result = chained(pending, lambda v: started.append(v) or done(v))
    assert result.cancel()  # the caller left before the first stage finished
    pending.set_result(1)
    assert started == [] and result.cancelled()
    with pytest.raises(CancelledError):
        result.result(1)


def test_a_cancelled_caller_is_skipped_and_the_worker_survives():
    """An async request whose client left cancels its queued future; the others still get answers."""
    gate = threading.Event()
    seen = []

    def handler(group, items):
        gate.wait(10)
        seen.append(list(items))
        return [item * 2 for item in items]

    batcher = MicroBatcher(handler, max_batch=64)
    try:
        blocker = batcher.submit_nowait("g", [1])  # keeps the worker busy while the others queue
        time.sleep(0.2)
        left = batcher.submit_nowait("g", [2])
        stays = batcher.submit_nowait("g", [3])
        assert left.cancel()
        gate.set()
        assert blocker.result(10) == [2] and stays.result(10) == [6]
        assert left.cancelled() and seen == [[1], [3]]
        assert batcher.submit("g", [4]) == [8]
    finally:
        batcher.close()
