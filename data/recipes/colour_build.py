"""Build the colour test: every picked object recoloured in six colours, queried as "a <colour> <object>".

    python data/recipes/colour_build.py --manifest /work/data-build/manifests/val_stamps.jsonl \\
        --out /work/data-build --name colour_val --objects 60
    python data/recipes/colour_build.py --manifest /work/data-build/manifests/test_stamps_split.jsonl \\
        --out /work/data-build --name colour_test --objects 60

Why: "a red car" must prefer the red car, and no test set we have says whether it does. Here each
object is drawn six times, identical but for its colour, so the only thing that can rank the asked
colour first among an object's six versions is colour (chance: 1 in 6). The objects are Tux Paint
stamps (pictures no model here trains on), taken from one split so a colour weight chosen on
`colour_val` (from val_stamps) is reported on `colour_test` (from test_stamps_split).
Recolouring: every pixel that is not background white gets the target hue, a saturation of at least
0.6 and a brightness of at least 0.45 (so black and grey parts take the colour too); shading survives.
Objects whose caption names a colour are left out. Rows: image, text (the query), concept (the object),
colour.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image

from manifests import read_jsonl, write_jsonl
from splits import stable_fraction

log = logging.getLogger(__name__)

COLOURS = {"red": 0, "orange": 28, "yellow": 55, "green": 120, "blue": 225, "purple": 280}  # hue in degrees
COLOUR_WORDS = set(COLOURS) | {"black", "white", "grey", "gray", "pink", "brown", "golden", "silver", "violet"}
BACKGROUND = 235  # a pixel whose darkest channel is above this is the white background
MIN_SATURATION, MIN_VALUE = 0.6, 0.45
SALT = "mmsearch-colour-test-v1"


def object_name(caption: str) -> str:
    """'A sliced lime.' -> 'sliced lime' (the query adds its own article and colour)."""
    name = re.sub(r"^(a|an|the|some)\s+", "", caption.strip().rstrip(".!").strip(), flags=re.I)
    return name[:1].lower() + name[1:]


def colour_query(colour: str, name: str) -> str:
    """'a red sliced lime', 'an orange sliced lime'."""
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {name}"


def names_a_colour(caption: str) -> bool:
    return bool(set(re.findall(r"[a-z]+", caption.lower())) & COLOUR_WORDS)


def recolour(picture: Image.Image, hue_degrees: float) -> Image.Image:
    """The picture with every non-background pixel turned to ``hue_degrees`` (shading kept)."""
    rgb = np.asarray(picture.convert("RGB"))
    hsv = np.asarray(picture.convert("RGB").convert("HSV")).astype(np.float32)
    foreground = rgb.min(axis=2) <= BACKGROUND
    hsv[..., 0] = np.where(foreground, hue_degrees / 360 * 255, hsv[..., 0])
    hsv[..., 1] = np.where(foreground, np.maximum(hsv[..., 1], MIN_SATURATION * 255), hsv[..., 1])
    hsv[..., 2] = np.where(foreground, np.maximum(hsv[..., 2], MIN_VALUE * 255), hsv[..., 2])
    return Image.fromarray(hsv.round().astype(np.uint8), "HSV").convert("RGB")


def pick_objects(rows: list[dict], count: int) -> list[dict]:
    """``count`` rows, one per concept, none naming a colour, in a stable hash order."""
    by_concept: dict[str, dict] = {}
    for row in rows:
        if not names_a_colour(row["text"]):
            by_concept.setdefault(row["concept"], row)
    ordered = sorted(by_concept.values(), key=lambda r: stable_fraction(r["concept"], SALT))
    return ordered[:count]


def build(manifest: Path, out: Path, name: str, count: int) -> list[dict]:
    rows = []
    image_dir = out / "images" / name
    image_dir.mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(pick_objects(read_jsonl(manifest), count)):
        with Image.open((manifest.parent / row["image"]).resolve()) as picture:
            picture.load()
            for colour, hue in COLOURS.items():
                path = image_dir / f"{n:03d}-{colour}.png"
                recolour(picture, hue).save(path)
                rows.append({"image": str(Path("..") / "images" / name / path.name), "text": colour_query(colour, object_name(row["text"])),
                             "concept": row["concept"], "colour": colour, "source": row.get("source", ""), "license": row.get("license", "")})
    write_jsonl(out / "manifests" / f"{name}.jsonl", rows)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description="build a colour test from a manifest of pictures")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the data build folder (images/NAME, manifests/NAME.jsonl)")
    p.add_argument("--name", required=True, help="e.g. colour_val or colour_test")
    p.add_argument("--objects", type=int, default=60)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rows = build(args.manifest, args.out, args.name, args.objects)
    log.info("%s: %d pictures of %d objects", args.name, len(rows), len(rows) // len(COLOURS))


if __name__ == "__main__":
    main()
