"""A tiny synthetic captioned corpus: coloured shapes on white, one concept per (colour, shape)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(colour: str, shape: str, seed: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 4, size // 3))
    cx, cy = (int(rng.integers(r + 2, size - r - 2)) for _ in range(2))
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def make_shapes_manifest(root: Path, per_concept: int = 2, seed: int = 0, name: str = "train.jsonl") -> Path:
    """Images under root/images and a JSONL manifest with image, text, texts, concept."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            for n in range(per_concept):
                rel = f"images/{colour}-{shape}-{seed}-{n}.png"
                draw_shape(colour, shape, seed * 1000 + ci * 100 + si * 10 + n).save(root / rel)
                rows.append({"image": rel, "text": f"a {colour} {shape}", "texts": [f"a {shape} in {colour}"], "concept": f"{colour}_{shape}"})
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
