"""Shared fixtures: a tiny deterministic random-weight model and small corpora built on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OpenVINO stays out of the pytest process (see tests/test_image_backend.py, which runs it in child processes)
os.environ.setdefault("MMSEARCH_IMAGE_BACKEND", "torch")
os.environ.setdefault("MMSEARCH_TEXT_BACKEND", "torch")

from indexer.pipeline import IndexReport, index_source  # noqa: E402
from mmsearch.encoders import TEST_MODEL, load_encoder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_encoder():
    return load_encoder(TEST_MODEL, device="cpu", batch_size=8)


def pattern_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A distinct, reproducible picture per seed (random blocks), so embeddings differ between files."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.NEAREST)


def make_corpus(root: Path, n_images: int = 6) -> dict[str, Path]:
    """Images (one with a sidecar caption), standalone texts in a subfolder, and one corrupt image."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(n_images):
        path = root / f"img{i}.jpg" if i % 2 == 0 else root / f"img{i}.png"
        pattern_image(i).save(path)
        files[f"img{i}"] = path
    (root / "img0.txt").write_text("a caption for the first image", encoding="utf-8")
    (root / "notes").mkdir(exist_ok=True)
    texts = {
        "sea": "The sea is wide and the waves are tall.",
        "bread": "Bake the bread for forty minutes until golden.",
        "train": "The night train leaves the station at nine.",
    }
    for name, body in texts.items():
        path = root / "notes" / f"{name}.txt"
        path.write_text(body, encoding="utf-8")
        files[name] = path
    return files


def run_index(source: Path, index_dir: Path, encoder=None, *, model: str | None = TEST_MODEL, **kwargs) -> IndexReport:
    """Index with the tiny model. ``encoder=False`` asserts that no model is loaded at all."""

    def factory(spec: str):
        if encoder is False:
            raise AssertionError("the model was loaded although nothing needed embedding")
        return encoder

    kwargs.setdefault("workers", 0)
    kwargs.setdefault("batch_size", 4)
    return index_source(source, index_dir, factory, model_spec=model, default_model=TEST_MODEL, progress=False, **kwargs)


@pytest.fixture()
def corpus(tmp_path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "corpus"
    return root, make_corpus(root)


@pytest.fixture()
def indexed(tmp_path, corpus, tiny_encoder):
    root, files = corpus
    index_dir = tmp_path / "index"
    report = run_index(root, index_dir, tiny_encoder)
    return root, files, index_dir, report
