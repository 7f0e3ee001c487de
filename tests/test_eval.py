"""`mmsearch eval`: recall through the index and search path, ground truth by concept or by row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torchvision import transforms as T

from mmsearch.cli import main
from mmsearch.encoders.base import l2_normalise
from mmsearch.train.evaluate import evaluate, format_breakdown, format_table, parse_ks
from mmsearch.errors import ConfigError
from shapes import COLOURS, draw_shape

CENTRE = 128.0


class ColourOracle:
    """A stand-in encoder that embeds an image by its shape's colour and a text by the colour it names.

    With ``swap`` it confuses colours on the image side, which makes a worse model for comparison.
    """

    device = "cpu"

    def __init__(self, spec: str, swap: bool = False) -> None:
        self.spec, self.model_id, self.dim = spec, f"{spec}@oracle", 3
        names = list(COLOURS)
        self._image_name = {n: (names[(i + 1) % len(names)] if swap else n) for i, n in enumerate(names)}
        self._transform = T.Compose([T.Resize((32, 32)), T.PILToTensor()])

    @property
    def image_transform(self):
        return self._transform

    def _colour_vector(self, rgb) -> np.ndarray:
        return np.asarray(rgb, dtype=np.float32) - CENTRE

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        out = []
        for image in batch.float():
            pixels = image.reshape(3, -1).t()
            saturated = pixels[(pixels.max(1).values - pixels.min(1).values) > 60]
            mean = saturated.mean(0).numpy()
            nearest = min(COLOURS, key=lambda n: np.linalg.norm(np.asarray(COLOURS[n]) - mean))
            out.append(self._colour_vector(COLOURS[self._image_name[nearest]]))
        return l2_normalise(np.stack(out))

    def encode_images(self, images) -> np.ndarray:
        return self.encode_image_tensors(torch.stack([self._transform(im) for im in images]))

    def encode_texts(self, texts) -> np.ndarray:
        vectors = []
        for text in texts:
            named = [n for n in COLOURS if n in text]
            vectors.append(self._colour_vector(COLOURS[named[0]]) if named else np.ones(3, dtype=np.float32))
        return l2_normalise(np.stack(vectors))


def oracle_factory(spec: str):
    return ColourOracle(spec, swap=spec == "swapped")


def colour_manifest(root: Path, with_concept: bool = True, per_colour: int = 2) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for colour in COLOURS:
        for n in range(per_colour if with_concept else 1):
            rel = f"img/{colour}{n}.png"
            draw_shape(colour, "square", seed=n).save(root / rel)
            row = {"image": rel, "text": f"a {colour} square" + (f" number {n}" if n else "")}
            if with_concept:
                row["concept"] = colour
            rows.append(row)
    path = root / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_separable_set_scores_perfect_recall_and_baseline_is_shown(tmp_path):
    manifest = colour_manifest(tmp_path / "data")
    result = evaluate(manifest, ["oracle", "swapped"], ks=(1, 2), encoder_factory=oracle_factory, index_dir=tmp_path / "idx")
    model, baseline = result["models"]
    assert result["relevance"] == "concept"
    assert result["images"] == 8 and result["captions"] == 8
    assert model["text_to_image"] == {"R@1": 1.0, "R@2": 1.0}
    assert model["image_to_text"] == {"R@1": 1.0, "R@2": 1.0}
    assert baseline["text_to_image"]["R@1"] == 0.0  # every colour is mistaken for another
    table = format_table(result)
    assert "oracle" in table and "swapped" in table and "text->image R@1" in table and "image->text R@2" in table
    # the indexes were really built (and kept, since an index dir was given), one per model
    kept = [p for p in (tmp_path / "idx").iterdir() if p.is_dir()]
    assert len(kept) == 2 and {m["index_dir"] for m in result["models"]} == {str(p) for p in kept}
    # a second run reuses them: same numbers, nothing re-embedded
    again = evaluate(manifest, ["oracle", "swapped"], ks=(1, 2), encoder_factory=oracle_factory, index_dir=tmp_path / "idx")
    assert [m["text_to_image"] for m in again["models"]] == [m["text_to_image"] for m in result["models"]]


def test_row_relevance_without_concept_column(tmp_path):
    manifest = colour_manifest(tmp_path / "data", with_concept=False)
    result = evaluate(manifest, ["oracle"], ks=(1,), encoder_factory=oracle_factory)
    assert result["relevance"] == "row"
    assert result["models"][0]["text_to_image"]["R@1"] == 1.0
    assert result["models"][0]["image_to_text"]["R@1"] == 1.0


def test_concept_relevance_counts_any_image_of_the_concept(tmp_path):
    """'a red square number 1' is answered by either red image, not only by its own row's image."""
    manifest = colour_manifest(tmp_path / "data", per_colour=3)
    result = evaluate(manifest, ["oracle"], ks=(1,), encoder_factory=oracle_factory)
    assert result["models"][0]["text_to_image"]["R@1"] == 1.0


def test_by_column_scores_each_category_on_its_own_queries(tmp_path):
    """'cool' rows carry each other's colour names (green <-> blue), so the oracle misses exactly those:
    the breakdown must show warm perfect, cool zero, and the overall recall in between."""
    manifest = colour_manifest(tmp_path / "data")
    swapped_names = {"green": "blue", "blue": "green"}
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        colour = row["concept"]
        row["category"] = "cool" if colour in swapped_names else "warm"
        row["text"] = row["text"].replace(colour, swapped_names.get(colour, colour))
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = evaluate(manifest, ["oracle"], ks=(1, 2), encoder_factory=oracle_factory, by="category")
    model = result["models"][0]
    warm, cool = model["by_label"]["warm"], model["by_label"]["cool"]
    assert (warm["text_queries"], warm["image_queries"], cool["text_queries"], cool["image_queries"]) == (4, 4, 4, 4)
    assert warm["text_to_image"] == warm["image_to_text"] == {"R@1": 1.0, "R@2": 1.0}
    assert cool["text_to_image"] == cool["image_to_text"] == {"R@1": 0.0, "R@2": 0.0}
    assert model["text_to_image"] == model["image_to_text"] == {"R@1": 0.5, "R@2": 0.5}
    table = format_breakdown(result)
    assert table.splitlines()[0].startswith("category") and "cool" in table and "0.00/0.00" in table
    with pytest.raises(ConfigError):
        evaluate(manifest, ["oracle"], ks=(1,), encoder_factory=oracle_factory, by="no_such_column")


def test_parse_ks():
    assert parse_ks("10,1,5") == (1, 5, 10)
    for bad in ("0", "a,b", ""):
        with pytest.raises(ConfigError):
            parse_ks(bad)


def test_cli_eval_with_baseline_writes_json(tmp_path):
    manifest = colour_manifest(tmp_path / "data")
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(
        main, ["eval", str(manifest), "--model", "mmsearch-tiny-random", "--baseline", "mmsearch-tiny-random", "-k", "1,3", "--json-out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[1:] == ["mmsearch-tiny-random", "mmsearch-tiny-random"]
    data = json.loads(out.read_text())
    assert [m["spec"] for m in data["models"]] == ["mmsearch-tiny-random"] * 2
    assert set(data["models"][0]["text_to_image"]) == {"R@1", "R@3"}
    # the same model twice must score the same
    assert data["models"][0]["text_to_image"] == data["models"][1]["text_to_image"]


def test_cli_eval_errors_are_one_line(tmp_path):
    manifest = colour_manifest(tmp_path / "data")
    for args in (["eval", str(tmp_path / "missing.jsonl")], ["eval", str(manifest), "-k", "0"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output


def test_index_folder_follows_the_weights_file(tmp_path, monkeypatch):
    """Retrained weights at the same path (or a new shipped default) get a fresh index, not a mismatch error."""
    from mmsearch.encoders import lite_files
    from mmsearch.train.evaluate import index_folder_name

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    monkeypatch.setattr(lite_files, "DEFAULT_WEIGHTS", weights)  # where shipped_weights() reads it since the layout
    first = (index_folder_name(f"mmsearch-lite:{weights}"), index_folder_name("mmsearch-lite"))
    weights.write_bytes(b"two")
    second = (index_folder_name(f"mmsearch-lite:{weights}"), index_folder_name("mmsearch-lite"))
    assert first[0] != second[0] and first[1] != second[1]
    assert index_folder_name("ViT-B-32:laion2b_s34b_b79k") != index_folder_name("ViT-B-32:openai")


def test_hubness_counts_each_images_share_of_the_queries_top_lists():
    """Image 0 in every query's top list is a hub (share 1.0); image 3 is in nobody's (never)."""
    from mmsearch.train.evaluate import hubness

    tops = [[0, 1], [0, 2], [0, 1, 1]] + [[0]] * 17
    result = hubness(tops, image_count=4)
    assert result["queries"] == 20 and result["max_share"] == 1.0
    assert result["hubs"] == 2  # image 0 (20/20) and image 1 (2/20 = 10% > 5%); image 2 is 1/20 = 5%, not more
    assert result["never"] == 0.25
    assert result["even_share"] == 1.0  # four images, top lists of up to 10: every image could be in every list
    assert hubness([[0]] * 3, image_count=400)["even_share"] == 0.025  # 10 of 400


def test_eval_reports_hubness_of_the_text_to_image_rankings(tmp_path):
    manifest = colour_manifest(tmp_path / "data")
    result = evaluate(manifest, ["oracle"], ks=(1,), encoder_factory=oracle_factory)
    hubs = result["models"][0]["hubness"]
    assert hubs["queries"] == 8 and 0 < hubs["max_share"] <= 1.0
    assert "hub: max share in top 10 (even: 1.000)" in format_table(result)  # a handful of pictures: any top 10 holds them all
