"""Build data/sample/: the small bundled corpus behind the README's first commands.

    python data/build_sample.py [--out data/sample]

Fetches the `openmoji` npm package by name (CC BY-SA 4.0), renders a fixed list of everyday,
clearly distinct concepts to small PNGs with a sidecar caption each (`dog.png` + `dog.txt`), adds a
few standalone text notes about some of them, and writes the attribution/licence file. The concept
list is fixed in this file, so the output is the same on every run.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "recipes"))

from fetch import fetch_npm  # noqa: E402
from raster import normalize, render_svg  # noqa: E402
from splits import normalize_hexcode  # noqa: E402

log = logging.getLogger("build_sample")


class SampleError(RuntimeError):
    """The fetched package does not have what the fixed concept list needs."""

SIZE = 128
PACKAGE = "openmoji"

# folder -> emojibase/openmoji labels. Chosen to be everyday things that look clearly different.
CONCEPTS: dict[str, list[str]] = {
    "animals": ["dog", "cat", "horse", "cow", "pig", "elephant", "rabbit", "penguin", "fish", "octopus",
                "butterfly", "snail", "monkey", "turtle", "owl", "spider", "giraffe", "camel"],
    "food": ["red apple", "banana", "grapes", "strawberry", "carrot", "pizza", "hamburger", "hot dog",
             "bread", "cheese wedge", "birthday cake", "doughnut", "ice cream", "hot beverage", "watermelon",
             "broccoli", "croissant", "pineapple"],
    "vehicles": ["automobile", "bicycle", "bus", "airplane", "rocket", "sailboat", "locomotive", "motorcycle",
                 "helicopter", "ambulance", "fire engine", "tractor"],
    "weather": ["sun", "cloud with rain", "snowflake", "rainbow", "cloud with lightning", "tornado",
                "crescent moon", "snowman without snow"],
    "nature": ["evergreen tree", "sunflower", "cactus", "volcano", "mushroom"],
    "sports": ["soccer ball", "basketball", "tennis", "american football", "baseball", "ping pong", "bowling",
               "ice skate", "skis", "boxing glove", "trophy"],
    "objects": ["guitar", "light bulb", "mobile phone", "laptop", "camera", "alarm clock", "key", "scissors",
                "hammer", "umbrella", "glasses", "t-shirt", "crown", "wrapped gift", "house", "balloon",
                "envelope", "pencil", "teddy bear", "books"],
}

# Standalone text items: short notes about some of the pictured things (written for this sample).
NOTES: dict[str, str] = {
    "dog-walk": "Took the dog for a long walk in the park; he chased a ball until he was tired.",
    "cat-nap": "The cat slept all afternoon in a sunny spot on the windowsill.",
    "pizza-night": "Friday is pizza night: tomato, mozzarella and a crispy crust from the oven.",
    "fruit-salad": "A bowl of fruit salad with banana, grapes, strawberries and pineapple.",
    "birthday": "We lit the candles on the birthday cake and everyone sang.",
    "commute": "The bus was late again, so I rode my bicycle to work.",
    "flight": "Our airplane took off at dawn and landed on the coast by noon.",
    "storm": "Thunder and lightning all night, with heavy rain hitting the roof.",
    "snow-day": "It snowed overnight and the kids built a snowman in the garden.",
    "rainbow": "After the rain a bright rainbow appeared over the hills.",
    "football-match": "The soccer match ended two to one after a late goal.",
    "tennis": "Played tennis on a clay court; my serve is getting better.",
    "morning-coffee": "A hot cup of coffee is the best way to start the morning.",
    "guitar-lesson": "Practising chords on the acoustic guitar for half an hour every day.",
    "new-phone": "My new mobile phone takes much better photos than the old camera.",
    "farm-visit": "At the farm we saw cows, pigs, horses and a big red tractor.",
    "aquarium": "The aquarium had an octopus, colourful fish and a sea turtle.",
    "desert-trip": "Camels walked slowly past the tall cactus plants in the desert.",
}

LICENSE_TEXT = """# Sample corpus: attribution and licence

The pictures in this folder (`*/*.png`) are emoji from **OpenMoji** ({version}), the open-source emoji
and icon project of HfG Schwäbisch Gmünd (https://openmoji.org), fetched from the npm package
`openmoji@{version}` and rendered to {size} px PNG on a white background by `data/build_sample.py`.

They are licensed under the **Creative Commons Attribution-ShareAlike 4.0 International** licence
(CC BY-SA 4.0): https://creativecommons.org/licenses/by-sa/4.0/ . The rendered PNGs are adaptations
(rasterised, trimmed, resized) and are shared under the same licence. Per-image designer credit is in
`openmoji.json` of the package (`openmoji_author`).

Attribution: "All emojis designed by OpenMoji – the open-source emoji and icon project.
License: CC BY-SA 4.0"

The captions (`*/*.txt` beside each picture) are the CLDR/OpenMoji annotations of those emoji. The
notes in `notes/` were written for this sample and are available under the project's MIT licence.

This file has no `.md`/`.txt` extension on purpose: `mmsearch index` turns `.md` and `.txt` files into
searchable text items, and the licence is not a search result.
"""


def _slug(label: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in label.lower()).split())


def _openmoji_by_label(root: Path) -> dict[str, dict]:
    data = json.loads((root / "data" / "openmoji.json").read_text(encoding="utf-8"))
    return {e["annotation"]: e for e in data if e.get("annotation") and not e.get("skintone")}


def build(out: Path, cache: Path) -> int:
    """Write the sample folder from scratch; returns the number of images."""
    pkg = fetch_npm(PACKAGE, cache)
    by_label = _openmoji_by_label(pkg.root)
    missing = [label for labels in CONCEPTS.values() for label in labels if label not in by_label]
    if missing:
        raise SampleError(f"labels not in {pkg.source}: {', '.join(missing)}")
    if out.exists():
        shutil.rmtree(out)
    count = 0
    for folder, labels in CONCEPTS.items():
        for label in labels:
            entry = by_label[label]
            svg = pkg.root / "color" / "svg" / f"{entry['hexcode']}.svg"
            img = normalize(render_svg(svg.read_bytes(), 2 * SIZE), SIZE)
            if img is None:
                raise SampleError(f"blank picture for {label} ({normalize_hexcode(entry['hexcode'])})")
            dest = out / folder / f"{_slug(label)}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            img.quantize(colors=128, method=2, dither=0).save(dest, format="PNG", optimize=True)
            dest.with_suffix(".txt").write_text(label + "\n", encoding="utf-8")
            count += 1
    notes = out / "notes"
    notes.mkdir(parents=True)
    for name, text in NOTES.items():
        (notes / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    (out / "LICENSE").write_text(LICENSE_TEXT.format(version=pkg.version, size=SIZE), encoding="utf-8")
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "sample")
    p.add_argument("--cache", type=Path, default=None, help="package cache (default: a temporary folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            n = build(args.out.resolve(), (args.cache or Path(tmp)).resolve())
        except (SampleError, OSError) as exc:
            log.error("%s", exc)
            return 1
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    log.info("wrote %d images and %d notes to %s (%.0f KB)", n, len(NOTES), args.out, size / 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
