"""The OpenVINO image backend: chosen explicitly or by ``auto``, equivalent to torch, cached on disk."""

from __future__ import annotations

import importlib.util
import json
import platform
import sys

import numpy as np
import pytest
from PIL import Image

from bench.photos import make_photo
from mmsearch.encoders import TEST_MODEL, load_encoder
from mmsearch.encoders import openvino_tower
from mmsearch.encoders.openvino_tower import resolve_image_backend
from mmsearch.errors import ConfigError, ImageBackendError
from conftest import REPO

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
    monkeypatch.setattr(openvino_tower, "openvino_available", lambda: True)
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
    monkeypatch.setattr(openvino_tower, "openvino_available", lambda: False)
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
    monkeypatch.setattr(openvino_tower, "openvino_available", lambda: False)
    facts = json.loads(CliRunner().invoke(main, ["info", "--index-dir", str(tmp_path / "idx"), "--json"]).output)
    assert facts["image_backend"].startswith("torch (MMSEARCH_IMAGE_BACKEND=auto")
    monkeypatch.setattr(openvino_tower, "AUTO_MODELS", (TEST_MODEL,))
    assert openvino_tower.image_backend_summary(TEST_MODEL, "auto", "cpu").startswith("torch")  # still no package
    monkeypatch.setattr(openvino_tower, "openvino_available", lambda: True)
    assert openvino_tower.image_backend_summary(TEST_MODEL, "auto", "cpu").startswith("openvino (MMSEARCH_IMAGE_BACKEND=auto")
    assert openvino_tower.image_backend_summary(TEST_MODEL, "openvino", "cuda").startswith("unavailable")


def test_auto_falls_back_to_torch_when_compiling_fails(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ImageBackendError("cannot compile the image tower with OpenVINO: simulated")

    monkeypatch.setattr(openvino_tower, "openvino_available", lambda: True)
    monkeypatch.setattr(openvino_tower, "AUTO_MODELS", (TEST_MODEL,))
    monkeypatch.setattr(openvino_tower, "build_openvino_tower", broken)
    encoder = load_encoder(TEST_MODEL, "cpu", batch_size=4, image_backend="auto")
    assert encoder.image_backend == "torch"
    assert encoder.encode_images([make_photo(1, (96, 72))]).shape == (1, encoder.dim)
    assert "using torch for images" in caplog.text
    with pytest.raises(ImageBackendError, match="simulated"):
        load_encoder(TEST_MODEL, "cpu", batch_size=4, image_backend="openvino")


@needs_openvino
def test_tiny_model_through_openvino_matches_torch_and_reuses_the_cached_graph(cache_dir, monkeypatch):
    images = [make_photo(i, (96, 72)) for i in range(10)]
    reference = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="torch").encode_images(images)
    first = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
    assert first.image_backend.startswith("openvino") and "converted" in first.image_backend
    assert _cosines(first.encode_images(images), reference).min() >= 0.999  # fp32 graph: same numbers
    assert len(list(cache_dir.glob("openvino/*/stages.json"))) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached graph should have been read, not converted again")

    monkeypatch.setattr(openvino_tower, "_convert", no_conversion)
    second = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
    assert "cached" in second.image_backend
    assert _cosines(second.encode_images(images), reference).min() >= 0.999
    assert second.encode_image_tensors(first.image_transform(images[0])[None][:0]).shape == (0, second.dim)


@needs_openvino
def test_damaged_cached_graph_is_rebuilt(cache_dir):
    load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
    (graph,) = cache_dir.glob("openvino/*/stage_0.xml")
    graph.write_text("<not a graph")
    again = load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
    assert "converted" in again.image_backend
    assert graph.read_text().startswith("<?xml")


@needs_openvino
def test_a_graph_that_disagrees_with_torch_is_refused(cache_dir, monkeypatch):
    monkeypatch.setattr(openvino_tower, "PROBE_MIN_COSINE", 1.01)  # no graph can pass: the check must run
    with pytest.raises(ImageBackendError, match="differs from torch"):
        load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="openvino")
    monkeypatch.setattr(openvino_tower, "AUTO_MODELS", (TEST_MODEL,))
    assert load_encoder(TEST_MODEL, "cpu", batch_size=4, precision="fp32", image_backend="auto").image_backend == "torch"


def _sample_queries() -> tuple[list[Image.Image], list[str]]:
    """The bundled sample's pictures, and one query per picture from its file name ("alarm-clock" -> "an alarm clock")."""
    paths = sorted((REPO / "data" / "sample").rglob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths]
    return images, [f"a picture of {p.stem.replace('-', ' ')}" for p in paths]


@needs_openvino
@pytest.mark.slow
def test_default_model_openvino_keeps_embeddings_and_rankings(cache_dir):
    """mmsearch-lite through OpenVINO (bf16 where the CPU has it, as auto runs it) against torch fp32:
    per-item cosine min >= 0.98 and mean >= 0.995; text->image top-5 on the sample barely moves."""
    reference = load_encoder("mmsearch-lite", "cpu", batch_size=32, precision="fp32", image_backend="torch")
    fast = load_encoder("mmsearch-lite", "cpu", batch_size=32, image_backend="auto")
    assert fast.image_backend.startswith("openvino")
    sample_images, queries = _sample_queries()
    images = sample_images + [make_photo(i, (640, 480)) for i in range(16)]
    ref_images, fast_images = reference.encode_images(images), fast.encode_images(images)
    cosines = _cosines(ref_images, fast_images)
    assert cosines.min() >= 0.98 and cosines.mean() >= 0.995, (cosines.min(), cosines.mean())
    texts = reference.encode_texts(queries)
    assert texts.shape[1] == reference.dim == fast.dim  # the width known from the config is the real one
    overlap = _top5_overlap(texts, ref_images[: len(sample_images)], texts, fast_images[: len(sample_images)])
    assert overlap >= 0.9, overlap
    top1_ref = np.argmax(texts @ ref_images[: len(sample_images)].T, axis=1)
    top1_fast = np.argmax(texts @ fast_images[: len(sample_images)].T, axis=1)
    assert np.mean(top1_ref == top1_fast) >= 0.9


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc only")
def test_mmap_threshold_is_pinned_on_glibc():
    assert openvino_tower.pin_mmap_threshold() is True
