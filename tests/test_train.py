"""`mmsearch train`: contrastive training, the feature cache, resume, outputs that load as models."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmsearch.cli import main
from mmsearch.encoders import TEST_MODEL, load_encoder
from mmsearch.encoders.lite import LiteConfig, LiteDualEncoder, make_preprocess, make_tokenizer
from mmsearch.train import lite_features
from mmsearch.train.augment import AugmentConfig
from mmsearch.train.data import load_examples
from mmsearch.train.evaluate import evaluate
from mmsearch.train.options import TrainOptions
from mmsearch.train.run import train
from mmsearch.train.sampler import unique_group_batches
from shapes import make_shapes_manifest


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_manifest(tmp_path_factory.mktemp("shapes"), per_concept=2)


def tiny_options(source: Path, out: Path, **kw) -> TrainOptions:
    kw.setdefault("epochs", 10)
    return TrainOptions(source=source, val=source, model=TEST_MODEL, out=out, batch_size=8, lr=1e-3, device="cpu", **kw)


def t2i_recall(manifest: Path, spec: str) -> float:
    """Text->image Recall@5 through the index: 12 concepts, 24 images, so chance is far below 1."""
    return evaluate(manifest, [spec], ks=(5,), encoder_factory=lambda s: load_encoder(s, "cpu", 16))["models"][0]["text_to_image"]["R@5"]


def test_training_lowers_loss_and_raises_recall_of_open_clip_model(shapes, tmp_path):
    out = tmp_path / "tiny.pt"
    result = train(tiny_options(shapes, out))
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < 0.75 * losses[0]
    assert out.is_file() and out.with_name("tiny.pt.train-log.json").is_file()
    before, after = t2i_recall(shapes, TEST_MODEL), t2i_recall(shapes, f"{TEST_MODEL}:{out}")
    assert after >= before + 0.3, (before, after)
    # the checkpoint is an ordinary open_clip checkpoint: ARCH:/path loads it, with its own fingerprint
    encoder = load_encoder(f"{TEST_MODEL}:{out}", "cpu")
    assert encoder.model_id.startswith(f"{TEST_MODEL}@") and encoder.model_id != TEST_MODEL


def test_resume_continues_after_the_checkpoint_epoch(shapes, tmp_path):
    out = tmp_path / "tiny.pt"
    train(tiny_options(shapes, out, epochs=2))
    seen = []
    result = train(tiny_options(shapes, out, epochs=4, resume=True), on_epoch=lambda e: seen.append(e.epoch))
    assert seen == [3, 4]
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]


def test_resume_without_checkpoint_is_an_error(shapes, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(shapes), "--model", TEST_MODEL, "--out", str(tmp_path / "x.pt"), "--resume", "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.startswith("error: --resume: no training checkpoint") and len(result.output.strip().splitlines()) == 1


def random_lite(cfg: LiteConfig | None = None):
    """A LiteDualEncoder with random towers (no weights read) at a small input size: fast and offline."""
    cfg = cfg or LiteConfig(image_size=64)
    torch.manual_seed(0)
    model = LiteDualEncoder(cfg, load_towers=False)
    model.class_text_emb.copy_(torch.nn.functional.normalize(torch.randn(1000, 384), dim=-1))
    return model, make_preprocess(cfg), make_tokenizer(cfg)


def test_lite_training_caches_tower_features_and_reuses_them(shapes, tmp_path, monkeypatch):
    calls = Counter()
    original = lite_features.LiteFeatureCache._encode_images

    def counting(self, batch):
        calls["images"] += len(batch)
        return original(self, batch)

    monkeypatch.setattr(lite_features.LiteFeatureCache, "_encode_images", counting)
    cache = tmp_path / "cache"
    opts = dict(source=shapes, val=shapes, model="mmsearch-lite", batch_size=12, epochs=3, aug_views=2, cache_dir=cache, device="cpu")
    first = train(TrainOptions(out=tmp_path / "a.safetensors", **opts), model_loader=lambda spec: random_lite())
    n_images = len(load_examples(shapes))
    assert calls["images"] == n_images * 3  # the clean view + 2 augmented views per image
    shards = sorted(p.name for p in cache.rglob("*.npz"))
    second = train(TrainOptions(out=tmp_path / "b.safetensors", **opts), model_loader=lambda spec: random_lite())
    assert calls["images"] == n_images * 3  # nothing recomputed
    assert sorted(p.name for p in cache.rglob("*.npz")) == shards
    assert [h.train_loss for h in first.history] == pytest.approx([h.train_loss for h in second.history])
    assert first.history[-1].train_loss < first.history[0].train_loss
    # a different augmentation recipe is different views: they must be computed, not reused
    changed = {**opts, "aug_views": 1, "augment": AugmentConfig(flip=False)}
    train(TrainOptions(out=tmp_path / "c.safetensors", **changed), model_loader=lambda spec: random_lite())
    assert calls["images"] == n_images * 4


def test_unique_group_batches_never_repeat_a_concept():
    groups = ["a"] * 10 + ["b"] * 3 + [f"g{i}" for i in range(20)]
    batches = unique_group_batches(groups, 8, np.random.default_rng(0))
    for batch in batches:
        assert len({groups[i] for i in batch}) == len(batch)
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used))
    assert len(used) >= len(groups) - 8  # only a tail of one over-represented concept may be left out


def test_cli_train_errors_are_one_line(shapes, tmp_path):
    runner = CliRunner()
    cases = [
        ["train", str(tmp_path / "missing")],
        ["train", str(shapes), "--unlock-image-top", "2"],  # lite towers are frozen by design
        ["train", str(shapes), "--model", TEST_MODEL, "--batch-size", "1"],
        ["train", str(shapes), "--templates", "no placeholder"],
        ["train", str(shapes), "--model", "no-such-arch:x", "--out", str(tmp_path / "x.pt")],
    ]
    for args in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, (args, result.output)


@pytest.mark.slow
def test_lite_weights_round_trip_through_load_encoder(shapes, tmp_path):
    """Real towers: trained heads are saved, load as mmsearch-lite:/path and retrieve the training shapes."""
    out = tmp_path / "lite.safetensors"
    opts = TrainOptions(source=shapes, val=shapes, model="mmsearch-lite", out=out, batch_size=12, epochs=6, aug_views=0,
                        cache_dir=tmp_path / "cache", device="cpu")
    train(opts)
    assert out.stat().st_size < 8 * 1024 * 1024
    encoder = load_encoder(f"mmsearch-lite:{out}", "cpu")
    assert encoder.model_id.startswith("mmsearch-lite@")
    scores = evaluate(shapes, [f"mmsearch-lite:{out}"], ks=(1, 5), encoder_factory=lambda s: load_encoder(s, "cpu"))
    assert scores["models"][0]["text_to_image"]["R@5"] >= 0.9


def test_style_augmentation_is_its_own_recipe_and_leaves_the_plain_one_unchanged():
    # the plain recipe's key must not move (existing caches stay valid); the style recipe must differ
    assert AugmentConfig().key() == "f6f6d5dc4165"
    assert AugmentConfig(style=True).key() != AugmentConfig().key()


def test_traced_outlines_draw_dark_lines_on_the_shape_edges_only():
    from PIL import Image, ImageDraw

    from mmsearch.train.augment import TraceOutlines

    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(250, 200, 0))
    traced = np.asarray(TraceOutlines(p=1.0)(image).convert("L"))
    assert (traced < 30).sum() > 40  # an outline appeared
    assert traced[32, 32] > 100 and traced[2, 2] > 200  # the fill and the background are not blackened
    assert (traced[:3] > 200).all()  # no frame along the picture border


def test_style_views_are_reproducible_normalised_tensors():
    from PIL import Image

    from mmsearch.train.augment import seeded_view, train_transform

    preprocess = make_preprocess(LiteConfig())
    transform = train_transform(preprocess, AugmentConfig(style=True))
    image = Image.new("RGB", (96, 96), "white")
    image.paste((200, 30, 30), (20, 20, 76, 76))
    a, b = seeded_view(transform, image, 7), seeded_view(transform, image, 7)
    assert a.shape == preprocess(image).shape
    assert torch.equal(a, b)
