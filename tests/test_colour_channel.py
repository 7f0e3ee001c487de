"""mmsearch-lite's colour channel (mmsearch.encoders.colour_channel): what a picture's colour reads as,
which words of a query are colours, and that fusing them changes only what a colour word asks for.

The fast tests use a stand-in tower (no model); the slow ones index pictures drawn here with the real
default model, as a user would ("red shoes" must rank the red shoe first)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mmsearch.encoders.colour_channel import (
    ColourChannelEncoder, ColourConfig, channel_config, colour_config_path, colour_model_id, load_colour_config, reported_model_id,
)
from mmsearch.encoders.colour_pixels import COLOUR_NAMES, DESCRIPTOR_VERSION, colour_descriptors, descriptors_from_pixels
from mmsearch.encoders.colour_words import colour_words, text_colour_vector, text_colour_vectors
from mmsearch.encoders.lite_files import lite_model_id, shipped_weights
from mmsearch.hashing import sha256_file
from mmsearch.imaging.preprocess import shortest_side_crop

RGB = {"red": (210, 30, 35), "blue": (35, 70, 200), "green": (40, 150, 60), "yellow": (245, 215, 40), "orange": (250, 140, 20),
       "purple": (120, 50, 170), "pink": (250, 170, 200), "brown": (120, 70, 30), "black": (15, 15, 15), "grey": (128, 128, 128)}


def square(colour: tuple[int, int, int], ground: tuple[int, int, int] = (255, 255, 255), size: int = 224) -> Image.Image:
    """A filled square in the middle of a plain ground, as product pictures and stamps are drawn."""
    image = Image.new("RGB", (size, size), ground)
    ImageDraw.Draw(image).rectangle([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=colour)
    return image


def chw(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()


def top_name(descriptor: np.ndarray) -> str:
    return COLOUR_NAMES[int(np.argmax(descriptor))]


# --- pictures ---

def test_a_red_square_reads_red_and_a_blue_one_blue():
    red, blue = descriptors_from_pixels(np.stack([chw(square(RGB["red"])), chw(square(RGB["blue"]))]), None, None)
    assert top_name(red) == "red" and top_name(blue) == "blue"
    assert red[COLOUR_NAMES.index("red")] > 0.9 and blue[COLOUR_NAMES.index("red")] < 0.1
    assert float(red @ blue) < 0.2


@pytest.mark.parametrize("name", sorted(RGB))
def test_each_basic_colour_is_named(name):
    (descriptor,) = descriptors_from_pixels(chw(square(RGB[name]))[None], None, None)
    assert top_name(descriptor) == name
    assert abs(float(np.linalg.norm(descriptor)) - 1.0) < 1e-5  # every picture's colour part has the same length


def test_the_white_ground_does_not_drown_a_small_object():
    """A product shot is mostly white; what matters is the object on it."""
    image = Image.new("RGB", (224, 224), (255, 255, 255))
    ImageDraw.Draw(image).ellipse([92, 92, 132, 132], fill=RGB["green"])  # ~3% of the picture
    (descriptor,) = descriptors_from_pixels(chw(image)[None], None, None)
    assert top_name(descriptor) == "green"


def test_a_blank_picture_is_its_ground_colour_and_a_white_object_on_grey_is_white():
    blank, white_on_grey = descriptors_from_pixels(np.stack([chw(Image.new("RGB", (224, 224), "white")),
                                                             chw(square((250, 250, 250), ground=(120, 120, 120)))]), None, None)
    assert top_name(blank) == "white" and top_name(white_on_grey) == "white"


def test_uint8_and_normalised_float_pixels_give_the_same_descriptor():
    """The indexer hands the encoder uint8 crops (compiled graph) or normalised floats (torch): same colour."""
    preprocess = shortest_side_crop(224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    images = [square(RGB["orange"]), square(RGB["purple"], ground=(240, 240, 200))]
    floats = torch.stack([preprocess(image) for image in images])
    uint8 = torch.stack([torch.from_numpy(chw(image)) for image in images])
    np.testing.assert_allclose(descriptors_from_pixels(floats, (0.5,) * 3, (0.5,) * 3), descriptors_from_pixels(uint8, None, None), atol=1e-5)


def test_descriptors_of_an_empty_batch():
    assert colour_descriptors(np.zeros((0, 56, 56, 3), np.uint8)).shape == (0, len(COLOUR_NAMES))


# --- words ---

@pytest.mark.parametrize("text, name", [("a crimson dress", "red"), ("scarlet letter", "red"), ("Navy shoes", "blue"),
                                        ("a violet scarf", "purple"), ("gray cat", "grey"), ("grey cat", "grey"),
                                        ("RED SHOES", "red"), ("a golden crown", "yellow"), ("a silver spoon", "grey")])
def test_colour_words_and_their_synonyms(text, name):
    vector = text_colour_vector(text)
    assert top_name(vector) == name and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-6


def test_a_text_without_colour_words_is_the_zero_vector():
    for text in ["a lit candle", "a lemon", "chocolate cake", "", "shoes for running, size 42", "bluetooth speaker"]:
        assert not np.any(text_colour_vector(text)), text


def test_several_colours_count_alike_and_words_are_found_in_order():
    vector = text_colour_vector("a red and white striped shirt")
    assert vector[COLOUR_NAMES.index("red")] == pytest.approx(vector[COLOUR_NAMES.index("white")]) == pytest.approx(2 ** -0.5)
    assert colour_words("Navy-blue shoes, not crimson") == ["navy", "blue", "crimson"]
    assert text_colour_vectors([]).shape == (0, len(COLOUR_NAMES))


# --- fusion, with a stand-in tower ---

class ColourBlindTower:
    """A stand-in encoder that cannot see colour: a picture embeds by how much of it is covered (its shape),
    every text to one direction, so pictures rank by coverage alone, like the towers that ignore colour."""

    spec = "stand-in"
    model_id = "stand-in@0"
    dim = 3
    device = "cpu"
    image_transform = staticmethod(shortest_side_crop(224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))

    def encode_image_tensors(self, batch) -> np.ndarray:
        covered = (batch.float() < 0.99).float().mean(dim=(1, 2, 3)).numpy()  # normalised white is 1.0
        out = np.stack([np.ones_like(covered), covered, np.zeros_like(covered)], axis=1).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_texts(self, texts) -> np.ndarray:
        return np.tile(np.array([[0.6, 0.8, 0.0]], dtype=np.float32), (len(texts), 1))


def squares(names: list[str]) -> list[Image.Image]:
    """One square per colour, each a little larger than the one before (so they rank apart without colour)."""
    pictures = []
    for i, name in enumerate(names):
        image = Image.new("RGB", (224, 224), "white")
        ImageDraw.Draw(image).rectangle([60 - 4 * i, 60 - 4 * i, 164 + 4 * i, 164 + 4 * i], fill=RGB[name])
        pictures.append(image)
    return pictures


def test_fusion_ranks_the_asked_colour_first_and_leaves_colour_free_rankings_alone():
    tower = ColourBlindTower()
    encoder = ColourChannelEncoder(tower, ColourConfig(0.3))
    pictures = squares(["red", "blue", "green", "yellow"])
    fused = encoder.encode_images(pictures)
    assert fused.shape == (4, tower.dim + len(COLOUR_NAMES)) and encoder.dim == tower.dim + len(COLOUR_NAMES)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    for asked, expected in [("a red box", 0), ("a navy box", 1), ("an emerald box", 2), ("a golden box", 3)]:
        assert int(np.argmax(fused @ encoder.encode_texts([asked])[0])) == expected, asked
    preprocess = tower.image_transform
    plain = tower.encode_image_tensors(torch.stack([preprocess(p) for p in pictures])) @ tower.encode_texts(["a box"])[0]
    with_channel = fused @ encoder.encode_texts(["a box"])[0]
    assert list(np.argsort(-with_channel)) == list(np.argsort(-plain)) == [3, 2, 1, 0]
    assert encoder.spec == "stand-in" and encoder.model_id == colour_model_id("stand-in@0", ColourConfig(0.3)) != "stand-in@0"


def test_the_model_id_names_the_weight_and_the_descriptor():
    assert ColourConfig(0.3).fingerprint != ColourConfig(0.2).fingerprint
    assert colour_model_id("m@1", None) == "m@1" and colour_model_id("m@1", ColourConfig(0.0)) == "m@1"
    assert colour_model_id("m@1", ColourConfig(0.3)).startswith("m@1+colour-")


# --- the config file beside the weights ---

def test_a_colour_config_is_used_only_for_its_own_weights(tmp_path, caplog):
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"weights one")
    path = colour_config_path(weights)
    assert path.name == "mine.colour.json"
    assert load_colour_config(weights) is None  # no file: no channel
    ColourConfig(0.25, sha256_file(weights)).save(path)
    assert load_colour_config(weights).weight == 0.25 and channel_config(weights, "auto") is not None
    assert channel_config(weights, "off") is None
    weights.write_bytes(b"retrained weights")
    assert load_colour_config(weights) is None and "other weights" in caplog.text
    ColourConfig(0.25, sha256_file(weights), descriptor="older-v0").save(path)
    assert load_colour_config(weights) is None
    path.write_text(json.dumps({"format": 1, "weight": "nan"}), encoding="utf-8")
    assert load_colour_config(weights) is None


def test_the_shipped_colour_config_belongs_to_the_shipped_weights():
    """Retrained weights need the weight chosen again (the command is in the file)."""
    weights = shipped_weights()
    config = load_colour_config(weights)
    assert config is not None and config.weights_sha256 == sha256_file(weights) and config.descriptor == DESCRIPTOR_VERSION
    assert 0 < config.weight <= 1 and "colour_weight" in config.command
    assert reported_model_id(weights, "auto") == f"{lite_model_id(weights)}+colour-{config.fingerprint}"
    assert reported_model_id(weights, "off") == lite_model_id(weights)


# --- end to end with the real default model ---

def draw(shape: str, colour: tuple[int, int, int]) -> Image.Image:
    """A simple picture of ``shape`` filled with ``colour`` on white, outlined in black."""
    image = Image.new("RGB", (256, 256), "white")
    pen = ImageDraw.Draw(image)
    if shape == "heart":
        pen.ellipse([40, 50, 132, 142], fill=colour, outline="black", width=3)
        pen.ellipse([124, 50, 216, 142], fill=colour, outline="black", width=3)
        pen.polygon([(44, 112), (212, 112), (128, 220)], fill=colour)
    elif shape == "star":
        points = []
        for i in range(10):
            radius = 110 if i % 2 == 0 else 45
            angle = np.pi / 2 + i * np.pi / 5
            points.append((128 + radius * np.cos(angle), 138 - radius * np.sin(angle)))
        pen.polygon(points, fill=colour, outline="black", width=3)
    elif shape == "t-shirt":
        pen.polygon([(70, 40), (110, 40), (128, 60), (146, 40), (186, 40), (236, 90), (206, 120), (186, 100), (186, 226),
                     (70, 226), (70, 100), (50, 120), (20, 90)], fill=colour, outline="black", width=3)
    else:
        raise ValueError(shape)
    return image


SHAPES = ("heart", "star", "t-shirt")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drawn")
    for shape in SHAPES:
        for name in ("red", "blue"):
            draw(shape, RGB[name]).save(root / f"{name}-{shape}.png")
    return root


def _index(source: Path, index_dir: Path, colour: str, monkeypatch) -> Path:
    from click.testing import CliRunner

    from mmsearch.cli import main
    from mmsearch.config import get_settings

    monkeypatch.setenv("MMSEARCH_COLOUR", colour)
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["index", str(source), "--index-dir", str(index_dir), "--workers", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return index_dir


def _searcher(index_dir: Path, colour: str, monkeypatch):
    """A searcher whose model is loaded now, under MMSEARCH_COLOUR=``colour`` (it is read at load time)."""
    from mmsearch.config import get_settings
    from mmsearch.search import Searcher

    monkeypatch.setenv("MMSEARCH_COLOUR", colour)
    get_settings.cache_clear()
    searcher = Searcher(index_dir, device="cpu")
    try:
        searcher.encoder  # noqa: B018 (loads the model and checks it against the index)
    except Exception:
        searcher.close()
        raise
    return searcher


@pytest.mark.slow
def test_red_and_blue_queries_find_the_red_and_blue_drawings(drawn, tmp_path, monkeypatch):
    searcher = _searcher(_index(drawn, tmp_path / "on", "auto", monkeypatch), "auto", monkeypatch)
    try:
        assert "+colour-" in searcher.info()["model_id"]
        for shape in SHAPES:
            for name, other in (("red", "blue"), ("blue", "red")):
                ranked = [Path(h.path).name for h in searcher.search_texts([f"a {name} {shape}"], target="image", k=6)[0]]
                # the asked colour wins: the first hit has it, and the asked shape in it ranks above the
                # same shape in the other colour (which shape a cartoon heart or star is taken for is the
                # towers' business, and differs between CPUs' graphs; the colour must not)
                assert ranked[0].startswith(f"{name}-"), ranked
                assert ranked.index(f"{name}-{shape}.png") < ranked.index(f"{other}-{shape}.png"), ranked
        # image-by-image search reads colour too: for the red heart, the red star and the red t-shirt rank
        # above their blue versions (the shape still comes first: the blue heart is its nearest neighbour)
        with Image.open(drawn / "red-heart.png") as picture:
            ranked = [Path(h.path).name for h in searcher.search_image(picture.convert("RGB"), target="image", k=6)]
        assert ranked[0] == "red-heart.png"
        for shape in ("star", "t-shirt"):
            assert ranked.index(f"red-{shape}.png") < ranked.index(f"blue-{shape}.png"), ranked
    finally:
        searcher.close()


@pytest.mark.slow
def test_colour_free_queries_rank_as_without_the_channel(drawn, tmp_path, monkeypatch):
    on = _searcher(_index(drawn, tmp_path / "on", "auto", monkeypatch), "auto", monkeypatch)
    off = _searcher(_index(drawn, tmp_path / "off", "off", monkeypatch), "off", monkeypatch)
    try:
        assert "+colour-" not in off.info()["model_id"]
        for query in ("a heart", "a star", "a t-shirt", "clothes", "love"):
            ranked = [[Path(h.path).name for h in s.search_texts([query], target="image", k=6)[0]] for s in (on, off)]
            assert ranked[0] == ranked[1], query
    finally:
        on.close()
        off.close()


@pytest.mark.slow
def test_an_index_built_without_the_channel_is_refused_clearly(drawn, tmp_path, monkeypatch):
    from mmsearch.errors import ModelMismatchError

    index_dir = _index(drawn, tmp_path / "old", "off", monkeypatch)
    with pytest.raises(ModelMismatchError, match="differ only in mmsearch-lite's channels .*MMSEARCH_COLOUR"):
        _searcher(index_dir, "auto", monkeypatch)
    (drawn / "extra").mkdir(exist_ok=True)
    draw("star", RGB["green"]).save(drawn / "extra" / "green-star.png")
    try:
        from click.testing import CliRunner

        from mmsearch.cli import main
        from mmsearch.config import get_settings

        monkeypatch.setenv("MMSEARCH_COLOUR", "auto")
        get_settings.cache_clear()
        result = CliRunner().invoke(main, ["index", str(drawn), "--index-dir", str(index_dir), "--workers", "1"])
        assert result.exit_code != 0 and "MMSEARCH_COLOUR" in (result.output + str(result.exception))
    finally:
        (drawn / "extra" / "green-star.png").unlink()
        (drawn / "extra").rmdir()
        get_settings.cache_clear()
