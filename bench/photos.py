"""Deterministic photo-like JPEGs: smooth lighting gradients, overlapping soft shapes, sensor noise.

Real photos compress and decode like this (large smooth areas, some edges, fine noise), unlike
random pixels (which JPEG cannot compress) or flat colour (which it compresses to nothing).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PHOTO_SIZE = (1000, 750)


_NOISE: dict[tuple[int, int], np.ndarray] = {}


def _noise(width: int, height: int) -> np.ndarray:
    """One fixed sensor-noise field per size (computed once), shifted per photo."""
    if (width, height) not in _NOISE:
        _NOISE[(width, height)] = np.random.default_rng(12345).normal(0, 6, size=(height, width, 3)).astype(np.int16)
    return _NOISE[(width, height)]


def make_photo(seed: int, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """Drawn at a quarter of the size and blurred (cheap), scaled up smoothly, then noise is added."""
    rng = np.random.default_rng(seed)
    width, height = size
    small_w, small_h = max(8, width // 4), max(8, height // 4)
    y, x = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    base = rng.uniform(40, 215, size=3)
    slope = rng.uniform(-0.5, 0.5, size=(3, 2))
    pixels = np.stack([base[c] + slope[c, 0] * (x - small_w / 2) + slope[c, 1] * (y - small_h / 2) for c in range(3)], axis=-1)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * (small_w, small_h)
        w, h = rng.uniform(0.1, 0.6, size=2) * (small_w, small_h)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        box = (x0, y0, x0 + w, y0 + h)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0)))).resize(size, Image.BILINEAR)
    shift = (int(rng.integers(0, height)), int(rng.integers(0, width)))
    noise = np.roll(_noise(width, height), shift, axis=(0, 1))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def photo_folder(root: Path, count: int, size: tuple[int, int] = PHOTO_SIZE) -> Path:
    """``root`` holding photo_000000.jpg ... (quality 90). Photos are generated once into a pool beside
    ``root`` and hard-linked in, so folders of several sizes share files and a second run of a
    benchmark generates nothing (regenerating would give the same bytes anyway)."""
    pool = root.parent / "photo-pool"
    pool.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"photo_{i:06d}.jpg"
        source = pool / name
        if not source.exists():
            tmp = source.with_suffix(".tmp")
            make_photo(i, size).save(tmp, format="JPEG", quality=90)
            tmp.replace(source)
        if not (root / name).exists():
            os.link(source, root / name)
    return root
