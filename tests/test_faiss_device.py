"""FAISS on GPU when there is one, CPU otherwise: device choice, routing of searches, and clean fallback.

This machine has no GPU, so the GPU copy is stood in for by a CPU clone that records its calls; the
test at the end runs against a real GPU build of FAISS where one is present.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from mmsearch.vectors import device as faiss_device
from mmsearch.cli import main
from mmsearch.errors import ConfigError
from mmsearch.vectors.device import GpuPlacer
from mmsearch.vectors.index import VectorIndex
from mmsearch.search import Searcher


class RecordingCopy:
    """Stands in for a GPU index: answers like the CPU index it was cloned from, and counts searches."""

    def __init__(self, native: faiss.Index) -> None:
        self.index = faiss.clone_index(native)
        self.searches = 0

    def search(self, queries, k, *args, **kwargs):
        self.searches += 1
        return self.index.search(queries, k, *args, **kwargs)


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def no_gpu(monkeypatch):
    monkeypatch.setattr(faiss_device, "gpu_count", lambda: 0)


@pytest.fixture()
def fake_gpu(monkeypatch):
    """One 'GPU' whose copies are RecordingCopy objects."""
    copies: list[RecordingCopy] = []

    def clone(self, native):
        copies.append(RecordingCopy(native))
        return copies[-1]

    monkeypatch.setattr(faiss_device, "gpu_count", lambda: 1)
    monkeypatch.setattr(GpuPlacer, "clone", clone)
    return copies


def test_auto_uses_the_cpu_without_a_gpu_and_gpu_is_a_clear_error(no_gpu, indexed, tiny_encoder):
    assert faiss_device.resolve("auto") == "cpu"
    with pytest.raises(ConfigError, match="FAISS_DEVICE=gpu"):
        faiss_device.resolve("gpu")
    _, _, index_dir, _ = indexed
    assert Searcher(index_dir, tiny_encoder).info()["faiss_device"] == "cpu"
    with pytest.raises(ConfigError, match="FAISS_DEVICE=gpu"):
        Searcher(index_dir, tiny_encoder, faiss_device="gpu")


def test_cli_reports_the_faiss_device_and_refuses_a_missing_gpu_in_one_line(no_gpu, indexed, monkeypatch):
    _, _, index_dir, _ = indexed
    result = CliRunner().invoke(main, ["info", "--index-dir", str(index_dir)])
    assert result.exit_code == 0 and "faiss_device: cpu (faiss" in result.output
    monkeypatch.setenv("MMSEARCH_FAISS_DEVICE", "gpu")
    result = CliRunner().invoke(main, ["search", "x", "--index-dir", str(index_dir)])
    assert result.exit_code == 1 and "FAISS_DEVICE=gpu" in result.output and "Traceback" not in result.output


def test_unfiltered_searches_go_to_the_gpu_copy_with_the_same_answers(fake_gpu, indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    cpu = Searcher(index_dir, tiny_encoder, faiss_device="cpu").search_text("a pattern", k=5)
    searcher = Searcher(index_dir, tiny_encoder, faiss_device="auto")
    assert searcher.info()["faiss_device"] == "gpu"
    gpu = searcher.search_text("a pattern", k=5)
    assert [h.id for h in gpu] == [h.id for h in cpu]
    assert sum(c.searches for c in fake_gpu) == 1


def test_filtered_searches_never_use_the_gpu_copy_which_ignores_id_selectors():
    index = VectorIndex(16)
    vectors = unit_vectors(50)
    index.add(np.arange(100, 150), vectors)

    class IgnoresSelector:
        def search(self, *args, **kwargs):
            raise AssertionError("a filtered search reached the GPU copy")

    index.attach_search_copy(IgnoresSelector())
    allowed = np.array([103, 110, 140])
    _, ids = index.search_subset(vectors[:1], 3, allowed)
    assert set(ids[0]) == set(allowed)


def test_any_change_to_the_index_drops_the_gpu_copy():
    index = VectorIndex(16)
    index.add(np.arange(10), unit_vectors(10))
    copy = RecordingCopy(index.native)
    index.attach_search_copy(copy)
    index.add(np.array([99]), unit_vectors(1, seed=9))
    _, ids = index.search(unit_vectors(1, seed=9), 1)
    assert ids[0][0] == 99 and copy.searches == 0  # the stale copy would not know item 99


def test_an_index_type_the_gpu_cannot_hold_stays_on_the_cpu(monkeypatch, indexed, tiny_encoder):
    monkeypatch.setattr(faiss_device, "gpu_count", lambda: 1)
    monkeypatch.setattr(GpuPlacer, "clone", lambda self, native: None)
    _, _, index_dir, _ = indexed
    searcher = Searcher(index_dir, tiny_encoder)
    assert searcher.info()["faiss_device"] == "cpu" and searcher.search_text("a pattern", k=3)


@pytest.mark.skipif(faiss_device.gpu_count() == 0, reason="needs a GPU build of FAISS and a CUDA GPU")
def test_real_gpu_flat_search_matches_the_cpu(indexed, tiny_encoder):
    _, _, index_dir, _ = indexed
    cpu = Searcher(index_dir, tiny_encoder, faiss_device="cpu").search_text("a pattern", k=5)
    searcher = Searcher(index_dir, tiny_encoder, faiss_device="gpu")
    assert searcher.info()["faiss_device"] == "gpu"
    assert [h.id for h in searcher.search_text("a pattern", k=5)] == [h.id for h in cpu]
