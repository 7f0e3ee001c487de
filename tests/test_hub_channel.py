"""mmsearch-lite's hub channel (mmsearch.encoders.hub_channel): a picture that answers every caption of a
bank is pushed down text searches, and nothing else changes order.

The fast tests use a stand-in encoder with hand-made vectors; the last ones load the shipped default
model and its shipped hub file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mmsearch.encoders.base import l2_normalise
from mmsearch.encoders.hub_channel import (
    HubChannelEncoder, HubConfig, find_hub_file, hub_config_path, hub_model_id, reported_hub_model_id, with_hub_channel,
)

DIM = 8


def unit(*pairs: tuple[int, float]) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    for axis, value in pairs:
        v[axis] = value
    return v / np.linalg.norm(v)


# A bank of typical captions spread over axes 0-3. The "hub" picture sits between all of them (it looks a
# little like everything); the "cat" picture is specific (axis 4, the query's own direction, and axis 5).
BANK = l2_normalise(np.stack([unit((0, 1.0)), unit((1, 1.0)), unit((2, 1.0)), unit((3, 1.0))]))
HUB = unit((0, 0.5), (1, 0.5), (2, 0.5), (3, 0.5), (4, 1.2))
CAT = unit((4, 1.0), (5, 0.7))
QUERY = unit((4, 1.0), (1, 0.3))  # "a cat": on raw cosine the hub picture edges out the cat (0.83 vs 0.78)


class StandIn:
    """An encoder with fixed vectors: pictures and texts are looked up by name."""

    spec, model_id, dim, device = "stand-in", "stand-in@1", DIM, "cpu"
    vectors = {"hub": HUB, "cat": CAT, "a cat": QUERY, "a dog": unit((5, 1.0)), "a kitten": unit((4, 1.0), (6, 0.2))}

    def encode_images(self, names):
        return np.stack([self.vectors[n] for n in names]) if names else np.zeros((0, DIM), np.float32)

    def encode_texts(self, texts):
        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    def close(self):
        return "closed"


def config(lam: float = 1.0, centre: float | None = None) -> HubConfig:
    made = HubConfig(BANK, beta=20.0, lam=lam, text_coordinate=0.5, centre=0.0, model_id=StandIn.model_id)
    made.centre = float(np.median(made.priors(np.stack([HUB, CAT])))) if centre is None else centre
    return made


def test_a_picture_close_to_the_whole_bank_has_the_larger_prior():
    hub, cat = config().priors(np.stack([HUB, CAT]))
    assert hub > cat
    assert config().picture_coordinates(HUB[None])[0] < 0 < config().picture_coordinates(CAT[None])[0]


def test_the_hub_picture_drops_below_the_one_that_matches_the_query():
    """Raw cosine puts the hub first for "a cat"; with the channel the cat picture is first."""
    assert float(QUERY @ HUB) > float(QUERY @ CAT)
    encoder = HubChannelEncoder(StandIn(), config(), "stand-in@1+hubs-x")
    pictures = encoder.encode_images(["hub", "cat"])
    (query,) = encoder.encode_texts(["a cat"])
    hub_score, cat_score = pictures @ query
    assert cat_score > hub_score


def test_the_dot_product_is_the_cosine_minus_the_penalty_up_to_norms():
    cfg = config(lam=1.0)
    encoder = HubChannelEncoder(StandIn(), cfg, "id")
    pictures, (query,) = encoder.encode_images(["hub", "cat"]), encoder.encode_texts(["a cat"])
    raw = np.stack([HUB, CAT]) @ QUERY
    penalty = cfg.lam * (cfg.priors(np.stack([HUB, CAT])) - cfg.centre)
    h = cfg.picture_coordinates(np.stack([HUB, CAT]))
    expected = (raw - penalty) / (np.sqrt(1 + h**2) * np.sqrt(1 + cfg.text_coordinate**2))
    assert np.allclose(pictures @ query, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(pictures, axis=1), 1.0, atol=1e-5) and encoder.dim == DIM + 1


def test_text_to_text_and_picture_to_text_orders_are_unchanged():
    encoder = HubChannelEncoder(StandIn(), config(), "id")
    texts = ["a cat", "a dog", "a kitten"]
    plain_texts, hub_texts = StandIn().encode_texts(texts), encoder.encode_texts(texts)
    for row in range(len(texts)):
        assert list(np.argsort(-(plain_texts @ plain_texts[row]))) == list(np.argsort(-(hub_texts @ hub_texts[row])))
    for name in ("hub", "cat"):
        plain, hub = StandIn().encode_images([name])[0], encoder.encode_images([name])[0]
        assert list(np.argsort(-(plain_texts @ plain))) == list(np.argsort(-(hub_texts @ hub)))


def test_lam_zero_leaves_text_to_picture_order_alone():
    encoder = HubChannelEncoder(StandIn(), config(lam=0.0), "id")
    pictures, (query,) = encoder.encode_images(["hub", "cat"]), encoder.encode_texts(["a cat"])
    assert np.argmax(pictures @ query) == 0  # the hub, as on raw cosine
    assert encoder.encode_texts([]).shape == (0, DIM + 1) and encoder.encode_images([]).shape == (0, DIM + 1)


def test_everything_else_is_the_inner_encoders():
    encoder = HubChannelEncoder(StandIn(), config(), "id")
    assert encoder.spec == "stand-in" and encoder.close() == "closed"


def test_the_file_round_trips_and_belongs_to_one_model(tmp_path: Path, caplog):
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"weights")
    path = hub_config_path(weights)
    assert path.name == "mine.hubs.safetensors"
    cfg = config()
    cfg.chosen_on, cfg.command = {"captions": ["train.jsonl"]}, "python -m mmsearch.train.hub_bank ..."
    cfg.save(path)
    loaded = HubConfig.load(path)
    assert np.allclose(loaded.bank, BANK, atol=1e-3) and loaded.centre == pytest.approx(cfg.centre)
    assert loaded.chosen_on == cfg.chosen_on and loaded.command == cfg.command and loaded.model_id == StandIn.model_id

    encoder = with_hub_channel(StandIn(), weights, "auto")
    assert isinstance(encoder, HubChannelEncoder) and encoder.model_id == hub_model_id(StandIn.model_id, path)
    assert encoder.model_id.startswith("stand-in@1+hubs-") and reported_hub_model_id(weights, StandIn.model_id, "auto") == encoder.model_id
    assert with_hub_channel(StandIn(), weights, "off").model_id == StandIn.model_id
    assert reported_hub_model_id(weights, StandIn.model_id, "off") == StandIn.model_id

    other = StandIn()
    other.model_id = "stand-in@2"  # retrained weights: the bank was embedded by another model
    with caplog.at_level(logging.WARNING):
        assert with_hub_channel(other, weights, "auto") is other
    assert "made for model stand-in@1" in caplog.text


def test_a_damaged_hub_file_is_ignored_with_a_warning(tmp_path: Path, caplog):
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"weights")
    hub_config_path(weights).write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING):
        assert find_hub_file(weights, StandIn.model_id, "auto") is None
    assert "ignoring hub file" in caplog.text


def test_bad_constants_are_refused():
    with pytest.raises(ValueError):
        HubConfig(BANK, beta=0.0, lam=1.0, text_coordinate=0.5, centre=0.0, model_id="x")
    with pytest.raises(ValueError):
        HubConfig(BANK, beta=20.0, lam=float("nan"), text_coordinate=0.5, centre=0.0, model_id="x")
    with pytest.raises(ValueError):
        HubConfig(np.zeros((0, DIM), np.float32), beta=20.0, lam=1.0, text_coordinate=0.5, centre=0.0, model_id="x")


# --- building the file (python -m mmsearch.train.hub_bank) ---

class ColourMeans(StandIn):
    """Pictures embed as their mean colour (padded), texts as in StandIn or a fixed direction."""

    model_id = "colour-means@1"

    def encode_images(self, images):
        rows = [np.r_[np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(axis=0), np.zeros(DIM - 3)] for im in images]
        return l2_normalise(np.stack(rows))

    def encode_texts(self, texts):
        return l2_normalise(np.stack([np.r_[[len(t) % 3 == i for i in range(3)], np.ones(DIM - 3)].astype(np.float32) for t in texts]))


def test_the_bank_is_the_distinct_training_captions_and_the_centre_a_median_picture(tmp_path: Path):
    import json

    from PIL import Image

    from mmsearch.train.hub_bank import bank_captions, build, sample_pictures

    rows = []
    for i, (colour, caption) in enumerate([((250, 10, 10), "a red box"), ((10, 250, 10), "a green box"),
                                           ((10, 10, 250), "a blue box"), ((250, 10, 10), "a red box")]):
        Image.new("RGB", (8, 8), colour).save(tmp_path / f"p{i}.png")
        rows.append({"image": f"p{i}.png", "text": caption})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")

    captions = bank_captions([manifest, manifest])
    assert captions == ["a blue box", "a green box", "a red box"]  # distinct, sorted
    pictures = sample_pictures([manifest], sample=3)
    assert len(pictures) == 3 and len(set(pictures)) == 3 and sample_pictures([manifest], sample=3) == pictures  # fixed seed

    encoder = ColourMeans()
    config = build(encoder, captions, sample_pictures([manifest], sample=10), beta=20.0, lam=1.0, text_coordinate=0.5)
    assert config.model_id == "colour-means@1" and config.bank.shape == (3, DIM)
    assert np.allclose(np.linalg.norm(config.bank, axis=1), 1.0, atol=1e-3)
    priors = config.priors(encoder.encode_images([Image.open(tmp_path / f"p{i}.png").convert("RGB") for i in range(4)]))
    assert config.centre == pytest.approx(float(np.median(priors)), abs=1e-6)  # all four pictures of the manifest
    assert build(encoder, captions, pictures[:1], 20.0, 1.0, 0.5).centre == pytest.approx(float(priors[0]), abs=1e-6)


# --- the shipped default model ---

@pytest.mark.slow
def test_the_shipped_hub_file_belongs_to_the_shipped_model():
    """The default model loads with the hub channel on (its id says so); MMSEARCH_HUBS=off drops it."""
    from mmsearch.encoders import load_encoder
    from mmsearch.encoders.colour_channel import reported_model_id
    from mmsearch.encoders.lite_files import shipped_weights
    from mmsearch.encoders.registry import reported_lite_model_id

    weights = shipped_weights()
    inner = reported_model_id(weights, "auto")
    assert find_hub_file(weights, inner, "auto") is not None, "the shipped hub file was made for other weights: rebuild it"
    encoder = load_encoder("mmsearch-lite", "cpu", hubs="auto")
    plain = load_encoder("mmsearch-lite", "cpu", hubs="off")
    assert encoder.model_id == reported_lite_model_id(weights, "auto", "auto") != plain.model_id == inner
    assert reported_lite_model_id(weights, "auto", "off") == inner
    assert encoder.dim == plain.dim + 1
    cfg = HubConfig.load(hub_config_path(weights))
    assert len(cfg.bank) > 1000 and cfg.chosen_on.get("captions") and cfg.command.startswith("python -m mmsearch.train.hub_bank")
