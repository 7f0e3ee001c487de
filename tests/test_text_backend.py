"""The text tower through OpenVINO (MMSEARCH_TEXT_BACKEND): same embeddings as torch, cached graph, clean fallback.

OpenVINO runs in child processes only (see tests/openvino_child.py)."""

from __future__ import annotations

import importlib.util

import pytest

from mmsearch.encoders import openvino_text
from mmsearch.encoders.openvino_text import resolve_text_backend
from mmsearch.errors import ConfigError, TextBackendError
from openvino_child import in_child

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")

_PAIR = """
    import json
    import numpy as np
    from mmsearch.encoders import TEST_MODEL, load_encoder
    from mmsearch.encoders import openvino_text
    from mmsearch.errors import TextBackendError

    QUERIES = ["a red apple", "a car", "a slice of pizza", "a dog", "a fire engine", "blue running shoes with white soles",
               "SKU-0042", "an old steam locomotive crossing a bridge in the snow", "sushi", "a rocket"]

    def lite(backend, **kwargs):
        return load_encoder("mmsearch-lite", "cpu", batch_size=8, text_backend=backend, image_backend="torch", **kwargs)
"""


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
@pytest.mark.slow
def test_default_model_texts_match_torch_and_the_graph_is_cached(tmp_path):
    cache = tmp_path / "cache"
    first = in_child(_PAIR + """
    reference = lite("torch", precision="fp32")
    fast = lite("openvino")
    ref, out = reference.encode_texts(QUERIES), fast.encode_texts(QUERIES)
    print(json.dumps({"backend": fast.text_backend, "cosines": (ref * out).sum(axis=1).tolist(),
                      "alone": float(fast.encode_texts(QUERIES[3:4])[0] @ out[3]),
                      "empty": list(fast.encode_texts([]).shape), "dim": fast.dim}))
    """, cache)
    assert first["backend"].startswith("openvino") and "converted" in first["backend"]
    assert min(first["cosines"]) >= 0.995, first["cosines"]
    assert first["alone"] >= 0.9999  # one query alone (no padding to trim) matches itself inside a batch
    assert first["empty"] == [0, first["dim"]]
    second = in_child(_PAIR + """
    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached graph should have been read, not converted again")

    openvino_text._convert = no_conversion
    fast = lite("auto")
    print(json.dumps({"backend": fast.text_backend, "vectors": fast.encode_texts(QUERIES).tolist()}))
    """, cache)
    assert second["backend"].startswith("openvino") and "cached" in second["backend"]


@needs_openvino
@pytest.mark.slow
def test_refused_graphs_and_models_without_a_compilable_text_tower(tmp_path):
    facts = in_child(_PAIR + """
    errors = {}
    try:
        load_encoder(TEST_MODEL, "cpu", batch_size=4, text_backend="openvino", image_backend="torch")
    except TextBackendError as exc:
        errors["tiny"] = str(exc)
    openvino_text.PROBE_MIN_COSINE = 1.01  # no graph can pass: the check must run
    try:
        lite("openvino")
    except TextBackendError as exc:
        errors["probe"] = str(exc)
    auto = lite("auto")
    print(json.dumps({"errors": errors, "auto": auto.text_backend, "shape": list(auto.encode_texts(["a dog"]).shape)}))
    """, tmp_path / "cache")
    assert "mmsearch-lite's text tower only" in facts["errors"]["tiny"]
    assert "differs from torch" in facts["errors"]["probe"]
    assert facts["auto"] == "torch" and facts["shape"][0] == 1
