"""The default model's weights file: what is saved is what is loaded, to the embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import pattern_image
from mmsearch.encoders.lite import DEFAULT_WEIGHTS, load_lite, save_lite_weights
from mmsearch.encoders.torch_encoder import TorchDualEncoder

pytestmark = pytest.mark.slow

TEXTS = ["a red apple", "a dog on a skateboard", "keycap number sign"]


def _embed(model, preprocess, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    encoder = TorchDualEncoder(model.eval(), preprocess, tokenizer, spec="t", model_id="t", device="cpu", batch_size=4)
    images = [pattern_image(seed).convert("RGB") for seed in range(3)]
    return encoder.encode_images(images), encoder.encode_texts(TEXTS)


def _perturbed_shipped_model():
    """The shipped model with its heads moved off the shipped values, so the test cannot pass by loading
    the default file instead of the saved one."""
    model, preprocess, tokenizer, _ = load_lite(DEFAULT_WEIGHTS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("image_head.", "text_head.")):
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model, preprocess, tokenizer


@pytest.mark.parametrize("half, tolerance", [(False, 1e-6), (True, 2e-3)])
def test_saved_weights_load_back_to_the_same_embeddings(tmp_path, half, tolerance):
    model, preprocess, tokenizer = _perturbed_shipped_model()
    before_images, before_texts = _embed(model, preprocess, tokenizer)

    path = save_lite_weights(model, tmp_path / "lite.safetensors", half=half)
    loaded, preprocess2, tokenizer2, model_id = load_lite(path)
    after_images, after_texts = _embed(loaded, preprocess2, tokenizer2)

    assert model_id.startswith("mmsearch-lite@")
    np.testing.assert_allclose(after_images, before_images, atol=tolerance)
    np.testing.assert_allclose(after_texts, before_texts, atol=tolerance)
    shipped_images, _ = _embed(*load_lite(DEFAULT_WEIGHTS)[:3])
    assert np.abs(shipped_images - after_images).max() > 10 * tolerance  # the perturbation really was saved
