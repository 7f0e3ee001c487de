"""The OpenVINO image backend: chosen explicitly or by ``auto``, equivalent to torch, cached on disk."""

from __future__ import annotations

import importlib.util
import json
import platform
import sys

import numpy as np
import pytest

from bench.photos import make_photo
from mmsearch.encoders import TEST_MODEL, load_encoder
from mmsearch.encoders import openvino_common, openvino_tower
from mmsearch.encoders.openvino_common import resolve_image_backend
from mmsearch.encoders.registry import image_backend_summary
from mmsearch.errors import ConfigError, ImageBackendError
from openvino_child import in_child

HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="openvino is not installed (pip install 'mmsearch[openvino]')")


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _top5_overlap(texts_a, images_a, texts_b, images_b) -> float:
    top_a = np.argsort(-(texts_a @ images_a.T), axis=1)[:, :5]
    top_b = np.argsort(-(texts_b @ images_b.T), axis=1)[:, :5]
    return float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top_a, top_b)]))


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(openvino_common, "openvino_available", lambda: True)
    assert resolve_image_backend("auto", "mmsearch-lite", "cpu") == "openvino"
    assert resolve_image_backend("auto", "mmsearch-lite:/some/weights.safetensors", "cpu") == "openvino"
    assert resolve_image_backend("auto", "mmsearch-lite", "cuda") == "torch"
    assert resolve_image_backend("auto", TEST_MODEL, "cpu") == "torch"  # auto only for the validated default model
    assert resolve_image_backend("openvino", TEST_MODEL, "cpu") == "openvino"
    assert resolve_image_backend("torch", "mmsearch-lite", "cpu") == "torch"
    with pytest.raises(ConfigError):
        resolve_image_backend("tensorrt", "mmsearch-lite", "cpu")
    with pytest.raises(ConfigError):
        resolve_image_backend("openvino", "mmsearch-lite", "cuda")


def test_auto_uses_torch_when_openvino_is_missing(monkeypatch):
    monkeypatch.setattr(openvino_common, "openvino_available", lambda: False)
    assert resolve_image_backend("auto", "mmsearch-lite", "cpu") == "torch"
    with pytest.raises(ImageBackendError, match="pip install"):
        resolve_image_backend("openvino", "mmsearch-lite", "cpu")


def test_info_says_which_backend_would_run(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from conftest import make_corpus
    from mmsearch.cli import main

    make_corpus(tmp_path / "c", n_images=2)
    args = ["index", str(tmp_path / "c"), "--index-dir", str(tmp_path / "idx"), "--model", TEST_MODEL, "--workers", "0"]
    assert CliRunner().invoke(main, args).exit_code == 0
    monkeypatch.setattr(openvino_common, "openvino_available", lambda: False)
    monkeypatch.setenv("MMSEARCH_IMAGE_BACKEND", "auto")
    facts = json.loads(CliRunner().invoke(main, ["info", "--index-dir", str(tmp_path / "idx"), "--json"]).output)
    assert facts["image_backend"].startswith("torch (MMSEARCH_IMAGE_BACKEND=auto")
    monkeypatch.setattr(openvino_common, "AUTO_MODELS", (TEST_MODEL,))
    assert image_backend_summary(TEST_MODEL, "auto", "cpu").startswith("torch")  # still no package
    monkeypatch.setattr(openvino_common, "openvino_available", lambda: True)
    summary = image_backend_summary(TEST_MODEL, "auto", "cpu")  # "openvino <precision> (MMSEARCH_...)"
    assert summary.startswith("openvino ") and "(MMSEARCH_IMAGE_BACKEND=auto" in summary
    assert image_backend_summary(TEST_MODEL, "openvino", "cuda").startswith("unavailable")


def test_auto_falls_back_to_torch_when_compiling_fails(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ImageBackendError("cannot compile the image tower with OpenVINO: simulated")

    monkeypatch.setattr(openvino_common, "openvino_available", lambda: True)
    monkeypatch.setattr(openvino_common, "AUTO_MODELS", (TEST_MODEL,))
    monkeypatch.setattr(openvino_tower, "build_openvino_tower", broken)
    encoder = load_encoder(TEST_MODEL, "cpu", batch_size=4, image_backend="auto")
    assert encoder.image_backend == "torch"
    assert encoder.encode_images([make_photo(1, (96, 72))]).shape == (1, encoder.dim)
    assert "using torch for images" in caplog.text
    with pytest.raises(ImageBackendError, match="simulated"):
        load_encoder(TEST_MODEL, "cpu", batch_size=4, image_backend="openvino")


_TINY_PAIR = """
    import json
    import numpy as np
    from bench.photos import make_photo
    from mmsearch.encoders import TEST_MODEL, load_encoder
    from mmsearch.encoders import openvino_common, openvino_tower
    from mmsearch.errors import ImageBackendError

    def cosines(a, b):
        return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    images = [make_photo(i, (96, 72)) for i in range(10)]
    reference = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="torch").encode_images(images)
"""


@needs_openvino
def test_tiny_model_through_openvino_matches_torch_and_reuses_the_cached_graph(cache_dir):
    first = in_child(_TINY_PAIR + """
    fast = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
    print(json.dumps({"backend": fast.image_backend, "min_cosine": float(cosines(fast.encode_images(images), reference).min())}))
    """, cache_dir)
    assert first["backend"].startswith("openvino") and "converted" in first["backend"]
    assert first["min_cosine"] >= 0.999  # an fp32 graph: the same numbers
    assert len(list(cache_dir.glob("openvino/*/stages.json"))) == 1
    second = in_child(_TINY_PAIR + """
    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached graph should have been read, not converted again")

    openvino_tower._convert = no_conversion
    fast = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
    empty = fast.encode_image_tensors(fast.image_transform(images[0])[None][:0])
    print(json.dumps({"backend": fast.image_backend, "min_cosine": float(cosines(fast.encode_images(images), reference).min()),
                      "empty": list(empty.shape), "dim": fast.dim}))
    """, cache_dir)
    assert "cached" in second["backend"]
    assert second["min_cosine"] >= 0.999
    assert second["empty"] == [0, second["dim"]]


@needs_openvino
def test_indexing_feeds_uint8_pixels_to_the_graph_with_the_same_embeddings(cache_dir, tmp_path):
    """The compiled graph normalises the decode workers' uint8 pixels itself: same vectors as the float
    path, and an index built that way stores vectors matching torch's."""
    facts = in_child(_TINY_PAIR + f"""
    import torch
    from pathlib import Path
    from mmsearch.imaging.fastpath import split_transform
    from indexer.pipeline import index_source
    from mmsearch.storage.indexdir import IndexDir

    fast = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
    stages = split_transform(fast.image_transform)
    pixels = torch.stack([stages.worker(im) for im in images])
    uint8, floats = fast.encode_image_tensors(pixels), fast.encode_image_tensors(stages.finish(pixels))
    folder = Path({str(tmp_path / "photos")!r})
    folder.mkdir()
    for i, im in enumerate(images):
        im.save(folder / f"p{{i:02d}}.png")
    index_source(folder, folder.parent / "index", lambda spec: fast, model_spec=TEST_MODEL, default_model=TEST_MODEL,
                 progress=False, workers=1, batch_size=4)
    store = IndexDir(folder.parent / "index").open_store()
    records = sorted(store.all_items(), key=lambda r: r.key)
    stored = store.vectors_for([r.id for r in records])
    ordered = np.stack([stored[r.id] for r in records])
    print(json.dumps({{"takes_uint8": fast.takes_uint8_pixels, "path_cosine": float(cosines(uint8, floats).min()),
                      "stored_vs_torch": float(cosines(ordered, reference).min())}}))
    """, cache_dir)
    assert facts["takes_uint8"] is True
    assert facts["path_cosine"] >= 0.9999
    assert facts["stored_vs_torch"] >= 0.999


@needs_openvino
@pytest.mark.slow  # three child processes converting the tiny model (~40 s on a busy 2-core machine)
def test_damaged_cached_graph_is_rebuilt_and_a_disagreeing_graph_is_refused(cache_dir):
    load = 'fast = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")\n    '
    in_child(_TINY_PAIR + "    " + load + 'print("{}")', cache_dir)
    (graph,) = cache_dir.glob("openvino/*/stage_0.xml")
    graph.write_text("<not a graph")
    again = in_child(_TINY_PAIR + "    " + load + 'print(json.dumps({"backend": fast.image_backend}))', cache_dir)
    assert "converted" in again["backend"]
    assert graph.read_text().startswith("<?xml")
    refused = in_child(_TINY_PAIR + """
    openvino_tower.PROBE_MIN_COSINE = 1.01  # no graph can pass: the check must run
    try:
        load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
        error = None
    except ImageBackendError as exc:
        error = str(exc)
    openvino_common.AUTO_MODELS = (TEST_MODEL,)
    auto = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="auto")
    print(json.dumps({"error": error, "auto": auto.image_backend}))
    """, cache_dir)
    assert refused["error"] and "differs from torch" in refused["error"]
    assert refused["auto"] == "torch"


@needs_openvino
@pytest.mark.slow
def test_default_model_openvino_keeps_embeddings_and_rankings(cache_dir):
    """mmsearch-lite through OpenVINO (bf16 where the CPU has it) against torch fp32: per-item cosine
    min >= 0.98 and mean >= 0.995; text->image top-5 on the bundled sample barely moves. (The shipped
    int8 graph, which auto prefers at bf16, is checked in test_int8_graph.py.)"""
    facts = in_child("""
    import os
    os.environ["MMSEARCH_IMAGE_INT8"] = "off"
    import json
    from pathlib import Path
    import numpy as np
    from PIL import Image
    from bench.photos import make_photo
    from mmsearch.encoders import load_encoder

    reference = load_encoder("mmsearch-lite", "cpu", batch_size=32, precision="fp32", image_backend="torch")
    fast = load_encoder("mmsearch-lite", "cpu", batch_size=32, image_backend="auto")
    paths = sorted(Path("data/sample").rglob("*.png"))  # one query per picture: "alarm-clock" -> "a picture of alarm clock"
    sample = [Image.open(p).convert("RGB") for p in paths]
    images = sample + [make_photo(i, (640, 480)) for i in range(16)]
    ref, out = reference.encode_images(images), fast.encode_images(images)
    texts = reference.encode_texts([f"a picture of {p.stem.replace('-', ' ')}" for p in paths])
    print(json.dumps({"backend": fast.image_backend, "dims": [texts.shape[1], reference.dim, fast.dim],
                      "ref": ref.tolist(), "out": out.tolist(), "texts": texts.tolist(), "n_sample": len(sample)}))
    """, cache_dir, timeout=1800)
    assert facts["backend"].startswith("openvino")
    assert len(set(facts["dims"])) == 1  # the width known from the config is the real one
    ref, out, texts, n = np.array(facts["ref"]), np.array(facts["out"]), np.array(facts["texts"]), facts["n_sample"]
    cosines = _cosines(ref, out)
    assert cosines.min() >= 0.98 and cosines.mean() >= 0.995, (cosines.min(), cosines.mean())
    assert _top5_overlap(texts, ref[:n], texts, out[:n]) >= 0.9
    assert np.mean(np.argmax(texts @ ref[:n].T, axis=1) == np.argmax(texts @ out[:n].T, axis=1)) >= 0.9


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc only")
def test_mmap_threshold_is_pinned_on_glibc():
    assert openvino_tower.pin_mmap_threshold() is True
