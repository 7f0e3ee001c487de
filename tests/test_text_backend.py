"""The text tower through OpenVINO (MMSEARCH_TEXT_BACKEND): same embeddings as torch, cached graph, clean fallback."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mmsearch.encoders import TEST_MODEL, load_encoder
from mmsearch.encoders import openvino_text
from mmsearch.encoders.openvino_text import resolve_text_backend
from mmsearch.errors import ConfigError, TextBackendError

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")

QUERIES = ["a red apple", "a car", "a slice of pizza", "a dog", "a fire engine", "blue running shoes with white soles",
           "SKU-0042", "an old steam locomotive crossing a bridge in the snow", "sushi", "a rocket"]


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(openvino_text, "openvino_available", lambda: True)
    assert resolve_text_backend("auto", "mmsearch-lite", "cpu") == "openvino"
    assert resolve_text_backend("auto", "mmsearch-lite", "cuda") == "torch"
    assert resolve_text_backend("auto", "ViT-B-32:laion2b_s34b_b79k", "cpu") == "torch"
    assert resolve_text_backend("torch", "mmsearch-lite", "cpu") == "torch"
    with pytest.raises(ConfigError, match="unknown text backend"):
        resolve_text_backend("onnx", "mmsearch-lite", "cpu")
    monkeypatch.setattr(openvino_text, "openvino_available", lambda: False)
    assert resolve_text_backend("auto", "mmsearch-lite", "cpu") == "torch"
    with pytest.raises(TextBackendError, match="pip install"):
        resolve_text_backend("openvino", "mmsearch-lite", "cpu")


@needs_openvino
def test_openvino_for_a_model_without_a_compilable_text_tower_is_a_clear_error(cache_dir):
    with pytest.raises(TextBackendError, match="mmsearch-lite's text tower only"):
        load_encoder(TEST_MODEL, "cpu", batch_size=4, text_backend="openvino", image_backend="torch")


@needs_openvino
@pytest.mark.slow
def test_default_model_texts_match_torch_and_the_graph_is_cached(cache_dir, monkeypatch):
    reference = load_encoder("mmsearch-lite", "cpu", batch_size=8, precision="fp32", text_backend="torch", image_backend="torch")
    fast = load_encoder("mmsearch-lite", "cpu", batch_size=8, text_backend="openvino", image_backend="torch")
    assert fast.text_backend.startswith("openvino") and "converted" in fast.text_backend
    ref, out = reference.encode_texts(QUERIES), fast.encode_texts(QUERIES)
    cosines = (ref * out).sum(axis=1)
    assert cosines.min() >= 0.995, cosines
    # one query alone (no padding columns to trim) gives the same vector as inside a batch
    assert float(fast.encode_texts(QUERIES[3:4])[0] @ out[3]) >= 0.9999
    assert fast.encode_texts([]).shape == (0, fast.dim)

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached graph should have been read, not converted again")

    monkeypatch.setattr(openvino_text, "_convert", no_conversion)
    again = load_encoder("mmsearch-lite", "cpu", batch_size=8, text_backend="openvino", image_backend="torch")
    assert "cached" in again.text_backend
    assert np.allclose(again.encode_texts(QUERIES), out, atol=1e-5)


@needs_openvino
@pytest.mark.slow
def test_a_graph_that_disagrees_with_torch_is_refused_and_auto_falls_back(cache_dir, monkeypatch):
    monkeypatch.setattr(openvino_text, "PROBE_MIN_COSINE", 1.01)  # no graph can pass: the check must run
    with pytest.raises(TextBackendError, match="differs from torch"):
        load_encoder("mmsearch-lite", "cpu", batch_size=8, text_backend="openvino", image_backend="torch")
    auto = load_encoder("mmsearch-lite", "cpu", batch_size=8, text_backend="auto", image_backend="torch")
    assert auto.text_backend == "torch"
    assert auto.encode_texts(["a dog"]).shape == (1, auto.dim)

