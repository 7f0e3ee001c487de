"""Decoding starts while the model loads; the vectors must be those of an ordinary run."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torchvision import transforms as T

import indexer.pipeline as pipeline
from bench.photos import make_photo
from conftest import make_corpus, run_index
from mmsearch.encoders.lite import LiteConfig, make_preprocess
from mmsearch.encoders.registry import TEST_MODEL, preprocess_without_model
from mmsearch.errors import ModelNotFoundError
from mmsearch.storage.indexdir import IndexDir


def test_lite_preprocessing_matches_open_clips_shortest_side_transform():
    from open_clip.transform import image_transform

    reference = image_transform(224, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="shortest",
                                interpolation="bicubic")
    ours = make_preprocess(LiteConfig())
    images = [make_photo(1), make_photo(2, (301, 977)), make_photo(3, (150, 120)).convert("L"),
              make_photo(4, (640, 480)).convert("RGBA"), make_photo(5, (224, 301)), make_photo(6, (225, 224)),
              make_photo(7, (1000, 750)).convert("P")]
    one_level = 1 / 255 / 0.5  # one 8-bit pixel level after normalising to [-1, 1]
    for image in images:
        difference = (ours(image) - reference(image)).abs()
        assert ours(image).shape == reference(image).shape == (3, 224, 224)
        # only the cropped region is resampled: filter positions may round differently, by one level at most
        assert difference.max() <= one_level + 1e-6 and (difference > 0).float().mean() < 0.01


def test_the_default_models_preprocessing_is_known_without_loading_it():
    transform = preprocess_without_model("mmsearch-lite")
    assert transform is not None and transform(make_photo(5)).shape == (3, 224, 224)
    assert preprocess_without_model("mmsearch-lite:bridge") is not None
    assert preprocess_without_model(TEST_MODEL) is None  # open_clip models: only known once loaded
    with pytest.raises(ModelNotFoundError):
        preprocess_without_model("mmsearch-lite:/no/such/weights.safetensors")


def _vectors_by_key(index_dir) -> dict[str, np.ndarray]:
    store = IndexDir(index_dir).open_store()
    try:
        records = store.all_items()
        vectors = store.vectors_for([r.id for r in records])
        return {r.key: vectors[r.id] for r in records}
    finally:
        store.close()


def _record_order(monkeypatch, events: list[str]) -> None:
    real = pipeline.decode_batches

    def decode_batches(*args, **kwargs):
        events.append("decode")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "decode_batches", decode_batches)


def _index_recording(source, index_dir, encoder, events, preprocess_for):
    def factory(spec: str):
        events.append("model")
        return encoder

    return pipeline.index_source(source, index_dir, factory, model_spec=TEST_MODEL, default_model=TEST_MODEL, progress=False,
                                 workers=1, batch_size=4, preprocess_for=preprocess_for)


def test_decoding_starts_before_the_model_loads_and_gives_the_same_vectors(tmp_path, tiny_encoder, monkeypatch):
    source = tmp_path / "corpus"
    make_corpus(source, n_images=9)
    plain_report = run_index(source, tmp_path / "plain", tiny_encoder, workers=1)
    events: list[str] = []
    _record_order(monkeypatch, events)
    report = _index_recording(source, tmp_path / "early", tiny_encoder, events, lambda spec: tiny_encoder.image_transform)
    assert events == ["decode", "model"]  # workers were decoding while the model loaded, and only once
    assert report.added == plain_report.added == 12 and report.failures == plain_report.failures
    plain, early = _vectors_by_key(tmp_path / "plain"), _vectors_by_key(tmp_path / "early")
    assert plain.keys() == early.keys()
    for key in plain:
        np.testing.assert_allclose(early[key], plain[key], atol=1e-6)


def test_a_wrongly_announced_preprocessing_is_not_used(tmp_path, tiny_encoder, monkeypatch, caplog):
    source = tmp_path / "corpus"
    make_corpus(source, n_images=5)
    run_index(source, tmp_path / "plain", tiny_encoder, workers=1)
    wrong = T.Compose([T.Resize(40), T.CenterCrop(40), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    events: list[str] = []
    _record_order(monkeypatch, events)
    with caplog.at_level(logging.WARNING, logger="indexer.pipeline"):
        _index_recording(source, tmp_path / "early", tiny_encoder, events, lambda spec: wrong)
    assert events == ["decode", "model", "decode"]
    assert "differently than announced" in caplog.text
    plain, early = _vectors_by_key(tmp_path / "plain"), _vectors_by_key(tmp_path / "early")
    assert plain.keys() == early.keys()
    for key in plain:
        np.testing.assert_allclose(early[key], plain[key], atol=1e-6)


def test_an_announcement_that_fails_leaves_the_error_to_the_model_load(tmp_path, tiny_encoder):
    def broken(spec: str):
        raise ModelNotFoundError("no such weights")

    source = tmp_path / "corpus"
    make_corpus(source, n_images=3)
    report = run_index(source, tmp_path / "index", tiny_encoder, workers=1, preprocess_for=broken)
    assert report.added == 6 and report.failures == []  # 3 images, their caption, 3 notes; decoded the usual way
