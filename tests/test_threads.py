"""The thread plan reaches the threads that search, not only the thread that applied it."""

from __future__ import annotations

import threading

import faiss
import numpy as np

from mmsearch.threads import available_cores, configure_batch, configure_serving
from mmsearch.vectors.index import VectorIndex


def _searching_thread_omp_threads(index: VectorIndex, queries: np.ndarray) -> tuple[int, int]:
    """(OpenMP threads a fresh thread starts with, those it has after one search)."""
    seen: list[tuple[int, int]] = []

    def worker() -> None:
        before = faiss.omp_get_max_threads()
        index.search(queries, 3)
        seen.append((before, faiss.omp_get_max_threads()))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    return seen[0]


def test_a_server_search_worker_searches_on_one_faiss_thread():
    """OpenMP's thread count is per thread: without setting it on the search worker, each FAISS search
    there ran on every core and left an OpenMP worker spinning (a fifth of a 1M-item server's CPU)."""
    rng = np.random.default_rng(0)
    index = VectorIndex(16, "Flat")
    index.add(np.arange(100, dtype=np.int64), rng.standard_normal((100, 16)).astype(np.float32))
    queries = rng.standard_normal((2, 16)).astype(np.float32)
    try:
        assert configure_serving().faiss_threads == 1
        before, after = _searching_thread_omp_threads(index, queries)
        if available_cores() > 1:
            assert before > 1  # what a new thread gets from OpenMP by itself
        assert after == 1

        cores = configure_batch().faiss_threads  # a batch plan gives a search every core again
        assert _searching_thread_omp_threads(index, queries)[1] == cores
    finally:
        configure_batch()
