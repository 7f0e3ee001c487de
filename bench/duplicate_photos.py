"""A photo folder with known near-duplicates: originals, edited copies of them, and unrelated photos.

Each edited copy goes through what a photo takes on its way through phones, chat apps and editors:
resized (50-85 %), cropped by 5 % of its width and height (split at random between the sides), a small
colour shift (per-channel gain and offset), saved again as JPEG at quality 40 without the original's
EXIF block. Originals carry EXIF (camera, capture time), so "EXIF stripped" is a real difference.
The unrelated photos come from the same generator (bench/photos.py) with other seeds: the same style,
so they are the hard case for telling "the same picture" from "a similar picture".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.photos import make_photo

ORIGINAL_SEEDS = 1_000_000  # far from bench.photos.photo_folder's seeds 0..N
UNRELATED_SEEDS = 2_000_000
EXIF_MAKE, EXIF_MODEL, EXIF_DATETIME_ORIGINAL = 0x010F, 0x0110, 0x9003


@dataclass(frozen=True)
class DuplicateSet:
    root: Path
    pairs: list[tuple[str, str]]  # (original path, edited copy path), resolved
    unrelated: list[str]

    def all_paths(self) -> list[str]:
        return [p for pair in self.pairs for p in pair] + self.unrelated


def edited_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Resize, crop 5 %, shift the colours a little (the JPEG quality and EXIF are the saver's part)."""
    width, height = image.size
    cut_w, cut_h = round(width * 0.05), round(height * 0.05)
    left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
    image = image.crop((left, top, width - (cut_w - left), height - (cut_h - top)))
    scale = float(rng.uniform(0.5, 0.85))
    image = image.resize((max(16, round(image.width * scale)), max(16, round(image.height * scale))), Image.LANCZOS)
    gain = rng.uniform(0.94, 1.06, size=3)
    offset = rng.uniform(-8, 8, size=3)
    pixels = np.asarray(image, dtype=np.float32) * gain + offset
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _exif(seed: int) -> Image.Exif:
    exif = Image.Exif()
    exif[EXIF_MAKE] = "Google"
    exif[EXIF_MODEL] = "Pixel 7"
    exif[EXIF_DATETIME_ORIGINAL] = f"2023:06:{1 + seed % 28:02d} 12:{seed % 60:02d}:00"
    return exif


def make_duplicate_set(root: Path, originals: int, unrelated: int, size: tuple[int, int] = (800, 600), seed: int = 0) -> DuplicateSet:
    """Write ``originals`` photos with one edited copy each and ``unrelated`` other photos under ``root``
    (originals/, copies/, others/). Deterministic for a given seed; existing files are kept."""
    rng = np.random.default_rng(seed)
    folders = {name: root / name for name in ("originals", "copies", "others")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(originals):
        original, copy = folders["originals"] / f"orig_{i:05d}.jpg", folders["copies"] / f"copy_{i:05d}.jpg"
        edit_rng = np.random.default_rng(rng.integers(2**32))
        if not (original.exists() and copy.exists()):
            photo = make_photo(ORIGINAL_SEEDS + seed * 100_000 + i, size)
            photo.save(original, format="JPEG", quality=92, exif=_exif(i))
            edited_copy(photo, edit_rng).save(copy, format="JPEG", quality=40)  # no exif=: stripped
        pairs.append((str(original.resolve()), str(copy.resolve())))
    others = []
    for i in range(unrelated):
        path = folders["others"] / f"photo_{i:05d}.jpg"
        if not path.exists():
            make_photo(UNRELATED_SEEDS + seed * 100_000 + i, size).save(path, format="JPEG", quality=90, exif=_exif(i))
        others.append(str(path.resolve()))
    return DuplicateSet(root, pairs, others)
