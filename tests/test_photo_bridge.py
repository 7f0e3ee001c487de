"""mmsearch-lite's WordNet bridge, the WordNet reader behind it, and the colour test's scoring."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsearch.encoders.lite import LiteConfig, LiteDualEncoder, load_lite, save_lite_weights
from mmsearch.train.colour_eval import colour_first_rate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "recipes"))

from wordnet_meta import ancestors, hypernym_chain, parse_data_line  # noqa: E402

# Three lines in WordNet 3.0's data.noun format: ox -> cattle -> bovine (pointers: @ hypernym, ~ hyponym).
OX = "02403003 05 n 01 ox 2 001 @ 02403454 n 0000 | an adult castrated bull of the genus Bos; especially Bos taurus  "
CATTLE = "02403454 05 n 03 cattle 0 cows 0 kine 0 001 @ 02402010 n 0000 | domesticated bovine animals  "
BOVINE = "02402010 05 n 01 bovine 0 000 | any of various members of the genus Bos  "


def test_wordnet_lines_give_lemmas_gloss_and_the_hypernym_chain():
    synsets = {s.offset: s for s in map(parse_data_line, (OX, CATTLE, BOVINE))}
    assert synsets[2403454].lemmas == ["cattle", "cows", "kine"]
    assert synsets[2403003].gloss.startswith("an adult castrated bull")
    assert hypernym_chain(synsets, 2403003, 3) == [2403454, 2402010]
    assert ancestors(synsets, 2403003, 1) == {2403454: 1}
    assert parse_data_line("  1 This software and database is being provided") is None


@pytest.fixture(scope="module")
def wordnet_model():
    """Built once: constructing the towers (random weights) is most of these tests' time."""
    torch.manual_seed(0)
    model = LiteDualEncoder(LiteConfig(image_size=64, bridge_classes="wordnet"), load_towers=False)
    model.class_text_emb.copy_(torch.nn.functional.normalize(torch.randn(1000, 384), dim=-1))
    model.bridge_class_emb.copy_(torch.nn.functional.normalize(torch.randn(1000, 384), dim=-1))
    return model


def test_wordnet_bridge_places_an_image_at_its_class_texts_and_keeps_the_heads_input(wordnet_model):
    """A confident class-7 image lands on class 7's WordNet text in the bridge, while the image head still
    gets the prompt bridge it was trained on."""
    model = wordnet_model
    logits = torch.full((1, 1000), -20.0)
    logits[0, 7] = 20.0
    with torch.no_grad():
        out = torch.nn.functional.normalize(model.output_bridge(logits), dim=-1)
        head_input = torch.nn.functional.normalize(model.image_bridge(logits), dim=-1)
    assert torch.allclose(out[0], model.bridge_class_emb[7], atol=1e-4)
    assert torch.allclose(head_input[0], model.class_text_emb[7], atol=1e-4)


def test_wordnet_bridge_survives_the_weights_file(wordnet_model, tmp_path, monkeypatch):
    model = wordnet_model
    path = save_lite_weights(model, tmp_path / "w.safetensors")
    import mmsearch.encoders.lite as lite

    monkeypatch.setattr(lite, "LiteDualEncoder", lambda cfg: LiteDualEncoder(cfg, load_towers=False))
    loaded, _, _, _ = load_lite(path)
    assert loaded.cfg.bridge_classes == "wordnet"
    assert torch.equal(loaded.bridge_class_emb, model.bridge_class_emb)
    with pytest.raises(ValueError, match="bridge_classes"):
        LiteDualEncoder(replace(loaded.cfg, bridge_classes="glosses"), load_towers=False)


def test_colour_test_counts_the_asked_colour_ranked_first_among_an_objects_versions():
    """Two objects in two colours; the texts 'red x' find the red picture, the model is wrong for 'blue y'."""
    red, blue = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    images = np.stack([red, blue, red, blue])
    texts = np.stack([red, blue, red, red])  # the last text asks for blue but looks red
    result = colour_first_rate(images, texts, ["x", "x", "y", "y"], ["red", "blue", "red", "blue"])
    assert result["asked_colour_first"] == 0.75 and result["chance"] == 0.5
    assert result["wrong_picks"] == {"red": 1} and result["objects"] == 2


def _row(mix, photo, guard_t2i, guard_i2t):
    return {"mix": mix, "val_stamps_t2i_r10": photo, "val_t2i_r10": guard_t2i, "val_i2t_r1": guard_i2t}


def test_the_mix_is_the_best_on_photos_that_keeps_the_emoji_guard():
    """bridge_mix's rule: a mix that wins on photos but drops the emoji guard by more than the tolerance is
    refused; among the rest the best photo recall wins, ties going to the larger mix."""
    from mmsearch.train.bridge_mix import choose

    base = _row("baseline", 0.42, 0.831, 0.375)
    rows = [_row(0.75, 0.512, 0.817, 0.278),  # best on photos, loses the guard
            _row(1.25, 0.499, 0.824, 0.370),
            _row(1.5, 0.499, 0.824, 0.389),
            _row(3.0, 0.446, 0.831, 0.409)]
    assert choose(base, rows, "val_stamps", "val", 0.01)["mix"] == 1.5
    assert choose(base, rows, "val_stamps", "val", 0.2)["mix"] == 0.75
    with pytest.raises(ValueError):
        choose(base, [rows[0]], "val_stamps", "val", 0.01)


def test_a_mix_fixed_beforehand_is_still_held_to_the_emoji_guard():
    """When the heads were trained on the photo validation set, the mix comes from cross-validation and
    bridge_mix runs without photos: the one mix is taken only if the guard holds against the release."""
    from mmsearch.train.bridge_mix import choose

    release = {"mix": "baseline", "val_t2i_r10": 0.824, "val_i2t_r1": 0.389}
    assert choose(release, [{"mix": 2.0, "val_t2i_r10": 0.845, "val_i2t_r1": 0.41}], None, "val", 0.01)["mix"] == 2.0
    with pytest.raises(ValueError):
        choose(release, [{"mix": 1.0, "val_t2i_r10": 0.838, "val_i2t_r1": 0.35}], None, "val", 0.01)


def test_changing_the_mix_reweights_the_two_parts(wordnet_model):
    """with_mix changes only the config's learned weight, and the joint embedding follows it: at mix w a
    picture's dot product with a text is (bridge_cos + w * learned_cos) / (1 + w)."""
    from mmsearch.train.bridge_mix import with_mix

    model = LiteDualEncoder(replace(wordnet_model.cfg, learned_weight=1.0), load_towers=False)
    model.load_state_dict(wordnet_model.state_dict(), strict=False)
    torch.manual_seed(1)
    pooled, logits, text = torch.randn(3, 1280), torch.randn(3, 1000), torch.randn(2, 384)
    with torch.no_grad():
        bridge_cos = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(model.output_bridge(logits), dim=-1).T
        learned_cos = (torch.nn.functional.normalize(model.learned_text(text), dim=-1)
                       @ torch.nn.functional.normalize(model.learned_image(pooled, model.image_bridge(logits)), dim=-1).T)
        for w in (0.5, 1.5, 3.0):
            with_mix(model, w)
            joint = model.join_text(text) @ model.join_image(pooled, logits).T
            assert torch.allclose(joint, (bridge_cos + w * learned_cos) / (1 + w), atol=1e-5)


def _tower_set(seed: int, n: int = 6):
    """A validation set of n pictures with one caption each, as tower features drawn at random."""
    from mmsearch.train.bridge_mix import TowerSet

    g = torch.Generator().manual_seed(seed)
    names = [f"c{i}" for i in range(n)]
    return TowerSet("val", torch.randn(n, 1280, generator=g), torch.randn(n, 1000, generator=g), torch.randn(n, 384, generator=g),
                    np.zeros((n, 11), np.float32), np.zeros((n, 11), np.float32), names, names, [{x} for x in names],
                    names, ["None"] * n, names)


def test_a_baseline_on_another_tower_is_scored_on_its_own_features(wordnet_model):
    """A variant on another image tower (mmsearch-lite:lite2) is held to the default's guard: the default's
    row must come from the default's own tower features, not from the variant's (which it cannot read)."""
    from mmsearch.train.bridge_mix import Sets, same_towers, score_grid

    import copy

    baseline, grid_model = wordnet_model, copy.deepcopy(wordnet_model)  # the grid changes its model's mix
    ours, theirs = Sets(None, _tower_set(1)), Sets(None, _tower_set(2))
    base_own, _ = score_grid(baseline, grid_model, theirs, [2.0], 0.0)
    base_cross, _ = score_grid(baseline, grid_model, ours, [2.0], 0.0, baseline_sets=theirs)
    base_ours, _ = score_grid(baseline, grid_model, ours, [2.0], 0.0)
    assert {k: v for k, v in base_cross.items() if k != "mix"} == {k: v for k, v in base_own.items() if k != "mix"}
    assert base_ours != base_own  # the two feature sets do score differently, so the check above means something
    lite2 = LiteDualEncoder(replace(wordnet_model.cfg, image_tower="tf_efficientnet_lite2", image_size=260), load_towers=False)
    assert not same_towers(wordnet_model, lite2) and same_towers(wordnet_model, wordnet_model)
