"""Pure logic of the data recipes (data/recipes/): caption cleaning, boilerplate filtering, concept
keys and the deterministic, disjoint splits. No network, no packages fetched."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "recipes"))

from clipart_meta import (  # noqa: E402
    ClipartMeta,
    clipart_captions,
    collection_titles,
    filename_caption,
    parse_metadata,
    playing_card_caption,
)
from manifests import ManifestError, validate_emoji_splits  # noqa: E402
from stamps_meta import first_sentence, name_caption, read_english_description, stamp_captions  # noqa: E402
from splits import TEST_CONCEPTS, TRAIN, VAL, concept_key, concept_split, normalize_hexcode, pick_stable  # noqa: E402
from textclean import (  # noqa: E402
    clean_caption,
    emoji_label_caption,
    is_boilerplate,
    is_skin_tone_code,
    split_tag_string,
    unique_captions,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (":red_heart:", "red heart"),
        ("GRINNING FACE WITH SMILING EYES", "grinning face with smiling eyes"),
        ("  fish &amp; chips  ", "fish & chips"),
        ("+1", ""),
        ("100", ""),
        (None, ""),
        ("flag-eg", "flag-eg"),
        ("Lime (Wedge", "Lime Wedge"),
    ],
)
def test_clean_caption(raw, expected):
    assert clean_caption(raw) == expected


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("flag: Egypt", "flag of Egypt"),
        ("keycap: #", "keycap number sign"),
        ("keycap: 7", "keycap 7"),
        ("waving hand: medium skin tone", "waving hand, medium skin tone"),
        ("grinning face with big eyes", "grinning face with big eyes"),
    ],
)
def test_emoji_label_caption(label, expected):
    assert emoji_label_caption(label) == expected


def test_unique_captions_dedupes_drops_primary_and_caps():
    alts = unique_captions("red heart", ["Red Heart", ":heart:", "heart", "love", "+1", "LOVE", "x" * 300], limit=5)
    assert alts == ["heart", "love"]
    assert len(unique_captions("a", [f"tag {i}" for i in range(50)], limit=7)) == 7


@pytest.mark.parametrize(("text", "expected"), [("wave_tone3", True), (":-1_tone1:", True), ("ringtone", False), ("milestone 3", False)])
def test_skin_tone_short_names_are_recognised(text, expected):
    assert is_skin_tone_code(text) is expected


def test_split_tag_string():
    assert split_tag_string("cat, kitten ,, pet") == ["cat", "kitten", "pet"]
    assert split_tag_string("") == []


@pytest.mark.parametrize(
    "text",
    [
        "gramastar",
        "Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)",
        "Open Clip Art Library",
        "layer1",
        "drawing.svg",
        "Clipart by Nicu Buculei - contour chipmunk",
        "HASH(0x862bbb8",
        "",
        "??",
        "70a",
    ],
)
def test_boilerplate_titles_are_rejected(text):
    assert is_boilerplate(text)


@pytest.mark.parametrize("text", ["Bored dog", "Stack of Books", "Egg on Muffin", "mosquito"])
def test_real_titles_are_kept(text):
    assert not is_boilerplate(text)


def test_author_name_as_title_is_boilerplate():
    assert is_boilerplate("Danny Allen", extra=["Danny Allen"])
    assert not is_boilerplate("Danny Allen")


def test_clipart_caption_falls_back_to_file_name_when_title_is_the_author():
    meta = ClipartMeta(title="Linda Kim", keywords=["unsorted", "hat", "clothing"], authors=["Linda Kim"])
    primary, alts = clipart_captions(meta, "straw_hat_linda_kim_01", ["people", "clothing"])
    assert primary == "straw hat"
    assert "hat" in alts and "clothing" in alts and "unsorted" not in alts


def test_clipart_collection_titles_are_not_captions():
    metas = [ClipartMeta(title="UK roadsigns") for _ in range(6)] + [ClipartMeta(title="Bored dog")]
    common = collection_titles(metas)
    assert common == frozenset({"uk roadsigns"})
    primary, _ = clipart_captions(metas[0], "crosswind", ["transportation"], common)
    assert primary == "crosswind"


def test_clipart_without_any_information_is_dropped():
    assert clipart_captions(ClipartMeta(title="gramastar", authors=["gramastar"]), "gramastar_01", []) is None


def test_filename_caption_drops_counter_and_truncated_author():
    assert filename_caption("cigno_architetto_frances_01", ["Architetto Francesco Rollandin"]) == "cigno"
    assert filename_caption("cross_hand_drawn_linda_k_02", ["Linda Kim"]) == "cross hand drawn"
    assert filename_caption("star_97pt07step", []) == "star"
    assert filename_caption("arrow07", []) == "arrow"


def test_playing_card_names_become_captions():
    assert playing_card_caption("white_h_9") == "nine of hearts playing card"
    assert playing_card_caption("bordered_s_q") == "queen of spades playing card"
    assert playing_card_caption("bored_dog_01") == ""
    primary, _ = clipart_captions(ClipartMeta(title="card"), "simple_d_a", ["recreation", "games", "cards"])
    assert primary == "ace of diamonds playing card"


def test_parse_metadata_reads_work_title_not_author(tmp_path):
    svg = tmp_path / "x.svg"
    svg.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        "<metadata><rdf:RDF><cc:Work><dc:title>Bored dog</dc:title><dc:description>a dog</dc:description>"
        "<dc:subject><rdf:Bag><rdf:li>dog</rdf:li><rdf:li>animal</rdf:li></rdf:Bag></dc:subject>"
        "<dc:creator><cc:Agent><dc:title>Some Artist</dc:title></cc:Agent></dc:creator>"
        "</cc:Work></rdf:RDF></metadata></svg>"
    )
    meta = parse_metadata(svg)
    assert (meta.title, meta.description, meta.keywords, meta.authors) == ("Bored dog", "a dog", ["dog", "animal"], ["Some Artist"])
    broken = tmp_path / "broken.svg"
    broken.write_text("<svg><metadata>")
    assert parse_metadata(broken) == ClipartMeta()


def test_concept_key_merges_skin_tones_and_variation_selectors():
    assert concept_key("1F44B-1F3FD") == concept_key("1f44b") == "1F44B"
    assert concept_key("1F9D1-1F3FB-200D-1F3A8") == "1F9D1-200D-1F3A8"
    assert normalize_hexcode("0023-FE0F-20E3") == normalize_hexcode("23-20e3") == "0023-20E3"
    assert normalize_hexcode("emoji_u1f600") == "1F600"


def test_concept_split_is_deterministic_and_close_to_requested_fractions():
    keys = [f"K{i}" for i in range(4000)]
    first = [concept_split(k) for k in keys]
    assert first == [concept_split(k) for k in keys]
    share = {s: first.count(s) / len(keys) for s in (TRAIN, VAL, TEST_CONCEPTS)}
    assert abs(share[TEST_CONCEPTS] - 0.10) < 0.02 and abs(share[VAL] - 0.05) < 0.015
    assert concept_split("K1", salt="other") in (TRAIN, VAL, TEST_CONCEPTS)
    with pytest.raises(ValueError):
        concept_split("K1", val_fraction=0.6, test_fraction=0.5)


def test_skin_tone_variants_share_the_split_of_their_concept():
    for base in ("1F44B", "1F476", "1F9D1-200D-1F3A8", "270B", "1F3C3-200D-2640"):
        variants = [base] + [base.replace(base.split("-")[0], base.split("-")[0] + f"-1F3F{t}", 1) for t in "BCDEF"]
        assert len({concept_split(concept_key(v)) for v in variants}) == 1


def test_pick_stable_ignores_option_order():
    opts = ["1F44B-1F3FB", "1F44B-1F3FC", "1F44B-1F3FD"]
    assert pick_stable("x", opts) == pick_stable("x", list(reversed(opts)))


def _row(tmp_path: Path, concept: str, style: str) -> dict:
    img = tmp_path / "images" / f"{concept}-{style}.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    img.write_bytes(b"png")
    return {"image": f"../images/{img.name}", "text": "t", "texts": [], "concept": concept, "style": style, "source": "s", "license": "l"}


def test_validate_emoji_splits_rejects_shared_concepts_and_leaked_style(tmp_path):
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    good = {TRAIN: [_row(tmp_path, "a", "noto")], VAL: [_row(tmp_path, "b", "noto")], "test_style": [_row(tmp_path, "a", "openmoji")]}
    validate_emoji_splits(mdir, good, "openmoji")
    shared = {**good, TEST_CONCEPTS: [_row(tmp_path, "a", "twemoji")]}
    with pytest.raises(ManifestError, match="both"):
        validate_emoji_splits(mdir, shared, "openmoji")
    leaked = {**good, TRAIN: [_row(tmp_path, "c", "openmoji")]}
    with pytest.raises(ManifestError, match="leaked"):
        validate_emoji_splits(mdir, leaked, "openmoji")
    missing = {TRAIN: [{**_row(tmp_path, "d", "noto"), "image": "../images/nope.png"}]}
    with pytest.raises(ManifestError, match="missing image"):
        validate_emoji_splits(mdir, missing, "openmoji")


def test_stamp_description_first_english_line_skips_translations(tmp_path):
    txt = tmp_path / "frog.txt"
    txt.write_text("\nA frog.\nach.utf8=Ogwalogwal\naf.utf8='n Padda.\n", encoding="utf-8")
    assert read_english_description(txt) == "A frog."
    only_translations = tmp_path / "x.txt"
    only_translations.write_text("fr.utf8=Une grenouille.\n", encoding="utf-8")
    assert read_english_description(only_translations) == ""
    assert read_english_description(tmp_path / "missing.txt") == ""


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("A frog.", "A frog"),
        ("A \u201cStop\u201d sign. Stop here, then go when it\u2019s your turn.", "A Stop sign"),
        ("\u2013 Because a brain is a terrible thing to waste\u2026", "Because a brain is a terrible thing to waste"),
        ("Say cheese!", "Say cheese"),
    ],
)
def test_stamp_caption_is_the_first_sentence(description, expected):
    assert first_sentence(description) == expected


def test_stamp_alternatives_are_file_name_description_and_folders():
    primary, alts = stamp_captions("A US 25 cent piece ($.25) called a quarter. Worth 25 cents.", "025quarter", ["symbols", "money", "us"])
    assert primary == "A US 25 cent piece ($.25) called a quarter"
    assert alts == ["quarter", "A US 25 cent piece ($.25) called a quarter. Worth 25 cents", "us", "money", "symbols"]
    assert name_caption("frog-1") == "frog" and name_caption("helmeted_guineafowl") == "helmeted guineafowl"
    assert stamp_captions("", "frog", ["animals"]) is None


def test_stamps_eval_split_is_stable_balanced_and_independent_of_the_training_split():
    """val_stamps / test_stamps_split: each concept always lands on the same side, about half each,
    and the split is not the train/heldout one (whose test half earlier models were chosen by)."""
    from stamps_build import stamps_eval_split, stamps_split

    concepts = [f"stamps:concept {i}" for i in range(400)]
    first = [stamps_eval_split(c, 0.5) for c in concepts]
    assert first == [stamps_eval_split(c, 0.5) for c in concepts]
    assert set(first) == {"val", "test"}
    assert 150 < first.count("test") < 250
    same_as_training_split = sum((s == "test") == (stamps_split(c, 0.5) == "test") for s, c in zip(first, concepts))
    assert 150 < same_as_training_split < 250


def test_derived_manifests_keep_the_folds_apart_and_the_test_stamps_out(tmp_path):
    """The shipped heads train on emoji + val_stamps, chosen by two folds of val_stamps: a concept is in one
    half only, a fold's training file holds its half and never the other, no test stamp is anywhere, the
    held-out emoji style stays out of training, and a stamp trains on its own name, not its folder words."""
    import json

    from derived_manifests import derive

    def rows(name, items):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")

    emoji = [{"image": f"../images/e{i}.png", "text": f"thing {i}", "texts": ["t"], "concept": f"emoji:{i}",
              "style": style} for i, style in enumerate(["noto", "twemoji", "emojione", "noto"])]
    stamps = [{"image": f"../images/s{i}.png", "text": f"A bird {i % 20}", "texts": [f"bird {i % 20}", "birds", "animals"],
               "concept": f"stamps:a bird {i % 20}", "style": "tuxpaint-stamps"} for i in range(40)]
    rows("train.jsonl", emoji[:3])
    rows("val.jsonl", emoji[3:])
    rows("val_stamps.jsonl", stamps)
    rows("test_stamps_split.jsonl", [{**stamps[0], "concept": "stamps:a test only"}])
    out = derive(tmp_path)

    half = {h: {r["concept"] for r in out[f"vs_{h}"]} for h in "AB"}
    assert half["A"] and half["B"] and not half["A"] & half["B"]
    assert len(out["vs_A"]) + len(out["vs_B"]) == len(stamps)
    for h, other in (("A", "B"), ("B", "A")):
        trained = {r["concept"] for r in out[f"train_plus_{h}"]}
        assert half[h] <= trained and not half[other] & trained
        assert half[other] <= {r["concept"] for r in out[f"valc_plus_{other}"]}
    everything = [r for rs in out.values() for r in rs]
    assert all(r["concept"] != "stamps:a test only" for r in everything)
    assert all(r["style"] != "emojione" for r in out["train_no_emojione"] + out["train_plus_vs"])
    trained_stamps = [r for r in out["train_plus_vs"] if r["style"] == "tuxpaint-stamps"]
    assert len(trained_stamps) == len(stamps) and all(r["texts"] == [r["concept"].removeprefix("stamps:a ")] for r in trained_stamps)
    assert out["vs_A"][0]["texts"][1:] == ["birds", "animals"]  # the scoring halves are left as built
    assert all(Path(r["image"]).is_absolute() for r in everything)
